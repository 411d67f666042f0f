/*
 * fuzz_headers.c - libFuzzer target for the header block parser and the
 * composition of the block portier sends (filters/filter.c).
 *
 * Octet 0 chooses max_header_size (bits 0-1: none, 1 + octet 1, 1 + octet 1
 * x 16, octet 1 x 256), octet 2 seeds the splits; the rest is the message.
 * It is parsed whole, one octet at a time and in pseudo-random pieces (these
 * from a buffer of exactly the octets at hand, so a read past them shows
 * under ASan), and the runs must agree in every respect.  Invariants:
 *   - the fields cover the block exactly: each name, the WSP before its ':',
 *     its value and a line end follow each other from octet 0 to where the
 *     block ends (the empty line, a malformed line, or the end);
 *   - names are printable ASCII without ':'; every LF in a value folds;
 *   - the block ends where it says: at an empty line, at a line that is no
 *     field and cannot continue one, or at the end of the message;
 *   - TOO_BIG exactly when the fields' octets exceed the limit;
 *   - what the backend gets (the composed fields, the empty line when one
 *     is there or owed, the body) parses back to exactly the fields the
 *     filters saw, minus the ones composition removes as forged, with the
 *     body where the filters saw it.
 *
 * Never writes files; aborts (for libFuzzer to report) on any violation.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "util.h"
#include "filter.h"
#include "fuzz.h"

#define FUZZ_AUTHSERV	"mx.example.test"

struct fuzz_run {
	struct filter_txn txn;
	enum filter_hparser_status st;
	size_t body;
	enum filter_eoh eoh;
};

/* fuzz_rng - xorshift64 for the split points */
static uint64_t
fuzz_rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/*
 * fuzz_parse - parse msg[0..len) handed over in pieces of 1..maxpiece
 * octets (0: whole); exact copies each time when copy is set
 */
static void
fuzz_parse(const char *msg, size_t len, size_t max, size_t maxpiece, bool copy, uint64_t seed,
    struct fuzz_run *run)
{
	struct filter_hparser hp;
	size_t have = maxpiece == 0 ? len : 0;
	char *buf = NULL;

	filter_txn_init(&run->txn);
	filter_hparser_init(&hp, &run->txn, max);
	for (;;) {
		if (copy) {
			free(buf);
			buf = xmalloc(have ? have : 1);
			memcpy(buf, msg, have);
		}
		run->st = filter_hparser_feed(&hp, &run->txn, copy ? buf : msg, have, have == len);
		if (run->st != FILTER_HPARSER_MORE)
			break;
		FUZZ_CHECK(have < len);
		have += 1 + (size_t)(fuzz_rng(&seed) % maxpiece);
		if (have > len)
			have = len;
	}
	free(buf);
	run->body = hp.body;
	run->eoh = hp.eoh;
}

/* fuzz_same - two runs agree in every respect */
static void
fuzz_same(const struct fuzz_run *a, const struct fuzz_run *b)
{
	size_t i;

	FUZZ_CHECK(a->st == b->st);
	FUZZ_CHECK(a->txn.nheaders == b->txn.nheaders);
	for (i = 0; i < a->txn.nheaders; i++) {
		FUZZ_CHECK(strcmp(a->txn.headers[i].name, b->txn.headers[i].name) == 0);
		FUZZ_CHECK(strcmp(a->txn.headers[i].value, b->txn.headers[i].value) == 0);
	}
	if (a->st == FILTER_HPARSER_DONE)
		FUZZ_CHECK(a->body == b->body && a->eoh == b->eoh);
}

/* fuzz_line_end - past the line end at p (CRLF, LF, or the end of the message) */
static size_t
fuzz_line_end(const char *msg, size_t len, size_t p)
{
	if (p < len && msg[p] == '\r' && p + 1 < len && msg[p + 1] == '\n')
		return p + 2;
	if (p < len && msg[p] == '\n')
		return p + 1;
	FUZZ_CHECK(p == len);
	return p;
}

/* fuzz_fields_end - where the fields end, the empty line not counted */
static size_t
fuzz_fields_end(const char *msg, const struct fuzz_run *run)
{
	if (run->eoh != FILTER_EOH_EMPTY_LINE)
		return run->body;
	FUZZ_CHECK(run->body >= 1 && msg[run->body - 1] == '\n');
	return run->body - (run->body >= 2 && msg[run->body - 2] == '\r' ? 2 : 1);
}

/* fuzz_cover - the fields, in order, are exactly the octets before fields_end */
static void
fuzz_cover(const char *msg, size_t len, const struct fuzz_run *run, size_t fields_end)
{
	const struct filter_header *h;
	size_t i, p = 0, n, k;

	for (i = 0; i < run->txn.nheaders; i++) {
		h = &run->txn.headers[i];
		n = strlen(h->name);
		FUZZ_CHECK(n > 0 && p + n <= len && memcmp(msg + p, h->name, n) == 0);
		for (k = 0; k < n; k++)
			FUZZ_CHECK(h->name[k] > ' ' && h->name[k] <= '~' && h->name[k] != ':');
		for (p += n; p < len && (msg[p] == ' ' || msg[p] == '\t'); p++)
			;
		FUZZ_CHECK(p < len && msg[p] == ':');
		n = strlen(h->value);
		FUZZ_CHECK(p + 1 + n <= len && memcmp(msg + p + 1, h->value, n) == 0);
		for (k = 0; k < n; k++)
			if (h->value[k] == '\n')
				FUZZ_CHECK(h->value[k + 1] == ' ' || h->value[k + 1] == '\t');
		p = fuzz_line_end(msg, len, p + 1 + n);
	}
	FUZZ_CHECK(p == fields_end);
}

/* fuzz_is_field_start - could the line at p open a field */
static bool
fuzz_is_field_start(const char *msg, size_t len, size_t p)
{
	size_t q;

	for (q = p; q < len && msg[q] > ' ' && msg[q] <= '~' && msg[q] != ':'; q++)
		;
	if (q == p)
		return false;
	while (q < len && (msg[q] == ' ' || msg[q] == '\t'))
		q++;
	return q < len && msg[q] == ':';
}

/* fuzz_end_ok - the block ends where and how the parser says */
static void
fuzz_end_ok(const char *msg, size_t len, const struct fuzz_run *run)
{
	const char *lf;
	size_t b = run->body, end;

	FUZZ_CHECK(b <= len);
	switch (run->eoh) {
	case FILTER_EOH_END:
		FUZZ_CHECK(b == len);
		break;
	case FILTER_EOH_EMPTY_LINE:
		break;		/* fuzz_fields_end checked the empty line */
	case FILTER_EOH_MALFORMED:
		FUZZ_CHECK(b < len);
		lf = memchr(msg + b, '\n', len - b);
		end = lf != NULL ? (size_t)(lf - msg) : len;
		if (memchr(msg + b, '\0', end - b) != NULL)
			break;
		if (msg[b] == ' ' || msg[b] == '\t')
			FUZZ_CHECK(run->txn.nheaders == 0);
		else
			FUZZ_CHECK(!fuzz_is_field_start(msg, end, b));
		break;
	default:
		FUZZ_CHECK(0);
	}
}

/* fuzz_kept - received fields composition keeps with authserv_id NULL */
static bool
fuzz_kept(const struct filter_header *h)
{
	return str_casecmp(h->name, "X-Portier-Quarantine") != 0;
}

/*
 * fuzz_backend_view - the composed fields, the empty line when the message
 * had one or has a body, the body: parsed again, they are the fields kept,
 * in order, and the body is where the filters saw it
 */
static void
fuzz_backend_view(const char *msg, size_t len, const struct fuzz_run *run, const char *authserv)
{
	struct filter_txn back;
	struct buf out;
	size_t i, j, head, body;

	buf_init(&out);
	buf_puts(&out, "");
	filter_compose_headers(&run->txn, authserv, &out);
	head = out.len;
	if (run->eoh == FILTER_EOH_EMPTY_LINE || run->body < len)
		buf_puts(&out, "\r\n");
	buf_append(&out, msg + run->body, len - run->body);
	filter_txn_init(&back);
	body = filter_parse_headers(&back, out.data, out.len);
	FUZZ_CHECK(body == (run->body < len || run->eoh == FILTER_EOH_EMPTY_LINE ? head + 2 : head));
	for (i = j = 0; i < run->txn.nheaders; i++) {
		const struct filter_header *h = &run->txn.headers[i];

		if (j < back.nheaders && strcmp(h->name, back.headers[j].name) == 0 &&
		    strcmp(h->value, back.headers[j].value) == 0) {
			j++;
			continue;
		}
		/* dropped: only what composition removes as forged */
		FUZZ_CHECK(authserv != NULL || !fuzz_kept(h));
		FUZZ_CHECK(!fuzz_kept(h) || str_casecmp(h->name, "Authentication-Results") == 0);
	}
	FUZZ_CHECK(j == back.nheaders);
	filter_txn_reset(&back);
	buf_free(&out);
}

/* LLVMFuzzerTestOneInput - one limit, three ways of feeding, all invariants */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_run whole, bytes, pieces, nolimit;
	const char *msg;
	size_t len, max, fields_end;
	uint64_t seed;

	if (size < 3)
		return 0;
	switch (data[0] & 3) {
	case 1:
		max = 1 + (size_t)data[1];
		break;
	case 2:
		max = 1 + (size_t)data[1] * 16;
		break;
	case 3:
		max = (size_t)data[1] * 256;
		break;
	default:
		max = SIZE_MAX;
	}
	seed = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)data[2] << 32 | size);
	msg = (const char *)data + 3;
	len = size - 3;

	fuzz_parse(msg, len, max, 0, false, seed, &whole);
	fuzz_parse(msg, len, max, 1, false, seed, &bytes);
	fuzz_parse(msg, len, max, 1 + (size_t)(data[2] % 64), true, seed, &pieces);
	fuzz_same(&whole, &bytes);
	fuzz_same(&whole, &pieces);
	FUZZ_CHECK(whole.st == FILTER_HPARSER_DONE || whole.st == FILTER_HPARSER_TOO_BIG);

	/* the limit: TOO_BIG exactly when the fields are longer; else no difference */
	fuzz_parse(msg, len, SIZE_MAX, 0, false, seed, &nolimit);
	FUZZ_CHECK(nolimit.st == FILTER_HPARSER_DONE);
	fields_end = fuzz_fields_end(msg, &nolimit);
	FUZZ_CHECK(whole.st == (fields_end > max ? FILTER_HPARSER_TOO_BIG : FILTER_HPARSER_DONE));
	if (whole.st == FILTER_HPARSER_DONE)
		fuzz_same(&whole, &nolimit);

	fuzz_cover(msg, len, &nolimit, fields_end);
	fuzz_end_ok(msg, len, &nolimit);
	fuzz_backend_view(msg, len, &nolimit, NULL);
	fuzz_backend_view(msg, len, &nolimit, FUZZ_AUTHSERV);

	filter_txn_reset(&whole.txn);
	filter_txn_reset(&bytes.txn);
	filter_txn_reset(&pieces.txn);
	filter_txn_reset(&nolimit.txn);
	return 0;
}
