/*
 * fuzz_policyd_reply.c - libFuzzer target for the policyd filter's reply
 * reader and action table (filters/policyd.c): what a policy server sends.
 *
 * The first octet picks max_reply (16 to 271) and where the rest is cut in
 * two (the reader resumes on partial input); the rest is the server's
 * bytes.  Invariants:
 *   - the reader consumes no more than it was given, and fed the same bytes
 *     in one piece or in two it reaches the same status and action;
 *   - ERROR always says why; DONE's action is a NUL-terminated string;
 *   - an action the table takes maps to a verdict of its kind: REJECT with a
 *     5xx reply, DEFER with a 4xx one, each with an enhanced code of the same
 *     class and a NUL-terminated text (the reader refuses a line with a
 *     control character but HTAB, a bare CR among them); PREPEND, REDIRECT
 *     and BCC
 *     have an argument inside the action string.
 */
#include "config.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "filter.h"
#include "policyd.h"
#include "fuzz.h"

/* fuzz_read - feed data in pieces cut at cut; the status, and the action copied */
static enum policyd_reply_status
fuzz_read(const char *data, size_t len, size_t max, size_t cut, char **action_r)
{
	struct policyd_reply rp;
	enum policyd_reply_status st = POLICYD_REPLY_MORE;
	size_t off = 0, used, avail = cut < len ? cut : len;

	policyd_reply_init(&rp, max);
	*action_r = NULL;
	while (st == POLICYD_REPLY_MORE) {
		used = 0;
		st = policyd_reply_feed(&rp, data + off, avail - off, &used);
		FUZZ_CHECK(used <= avail - off);
		off += used;
		if (st != POLICYD_REPLY_MORE)
			break;
		if (avail == len)
			break;		/* all given: the rest is a partial line */
		avail = len;
	}
	if (st == POLICYD_REPLY_ERROR)
		FUZZ_CHECK(rp.why[0] != '\0' && memchr(rp.why, '\0', sizeof(rp.why)) != NULL);
	if (st == POLICYD_REPLY_DONE && rp.action != NULL)
		*action_r = xstrdup(rp.action);
	policyd_reply_free(&rp);
	return st;
}

/* fuzz_reply_ok - a reply of class cls: code, ecode, text */
static void
fuzz_reply_ok(const struct filter_reply *r, int cls)
{
	const char *p;

	FUZZ_CHECK(r->code / 100 == cls);
	FUZZ_CHECK(memchr(r->ecode, '\0', sizeof(r->ecode)) != NULL);
	FUZZ_CHECK(r->ecode[0] == '\0' || r->ecode[0] - '0' == cls);
	FUZZ_CHECK(memchr(r->text, '\0', sizeof(r->text)) != NULL);
	for (p = r->text; *p != '\0'; p++)
		FUZZ_CHECK(*p != '\n');	/* lines end at LF: never inside one */
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct policyd_action a;
	enum policyd_reply_status s1, s2;
	char *act1, *act2;
	size_t max, cut, len;

	if (size < 1)
		return 0;
	max = 16 + data[0];
	len = size - 1;
	cut = len > 0 ? data[0] % (len + 1) : 0;
	s1 = fuzz_read((const char *)data + 1, len, max, len, &act1);
	s2 = fuzz_read((const char *)data + 1, len, max, cut, &act2);
	FUZZ_CHECK(s1 == s2);
	FUZZ_CHECK((act1 == NULL) == (act2 == NULL));
	FUZZ_CHECK(act1 == NULL || strcmp(act1, act2) == 0);
	if (act1 != NULL) {
		size_t alen = strlen(act1);

		memset(&a, 0, sizeof(a));
		if (policyd_action_parse(act1, &a)) {
			if (a.act == POLICYD_ACT_REJECT)
				fuzz_reply_ok(&a.reply, 5);
			else if (a.act == POLICYD_ACT_DEFER)
				fuzz_reply_ok(&a.reply, 4);
			if (a.act == POLICYD_ACT_PREPEND || a.act == POLICYD_ACT_REDIRECT ||
			    a.act == POLICYD_ACT_BCC)
				FUZZ_CHECK(a.arg != NULL && a.arg >= act1 && a.arg <= act1 + alen);
		}
	}
	free(act1);
	free(act2);
	return 0;
}
