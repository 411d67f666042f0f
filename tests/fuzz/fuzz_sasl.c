/*
 * fuzz_sasl.c - libFuzzer target for the SASL half of policy/auth.c.
 *
 * Octet 0 chooses the setup: bit 0 the mechanism (PLAIN or LOGIN), bit 1
 * whether the AUTH command carried an initial response.  The rest is split
 * at '\n' into client lines, each copied into a buffer of exactly its size
 * plus the NUL; with an initial response the first line is it, the others
 * go to auth_sasl_step until a status other than CHALLENGE (or the lines
 * run out, which leaves the exchange half done, as a dropped client does).
 *
 * Invariants: CHALLENGE always comes with a challenge that is valid base64;
 * BAD_BASE64 exactly when a strict reference decoder here refuses the line;
 * DONE gives a non-empty user and password of at most AUTH_MAX_FIELD
 * octets, NUL-free and equal to what the reference decoder finds in the
 * responses (so nothing was truncated at a NUL or made up), and an authzid
 * that is empty or the user.  Every line also goes through
 * auth_mech_lookup, which must return -1 or a mechanism named like it.
 * Everything is freed, so LeakSanitizer sees any leak.  Any broken
 * invariant aborts, which libFuzzer reports as a crash.  Never touches
 * files, sockets or global state.
 */
#include "config.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(c) do {						\
	if (!(c)) {							\
		fprintf(stderr, "%s:%d: invariant failed: %s\n",	\
		    __FILE__, __LINE__, #c);				\
		abort();						\
	}								\
} while (0)

#define FUZZ_MAX_LINES	16	/* an exchange takes at most 3; the rest is noise */

/* b64_value - the 6-bit value of a base64 character, or -1 */
static int
b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * ref_decode - a strict, independent RFC 4648 decoder: length a multiple of
 * 4, no blanks, at most two '=' and only at the very end.  Into out (at
 * least strlen(in) / 4 * 3 octets); false if in is not base64.
 */
static bool
ref_decode(const char *in, unsigned char *out, size_t *outlen_r)
{
	size_t len = strlen(in), i, o = 0, pad = 0;
	unsigned long acc;
	int v, j;

	if (len % 4 != 0)
		return false;
	for (i = 0; i < len; i += 4) {
		acc = 0;
		for (j = 0; j < 4; j++) {
			unsigned char c = (unsigned char)in[i + j];

			if (c == '=' && i + 4 == len && j >= 2 &&
			    (j == 3 || in[i + 3] == '=')) {
				pad++;
				v = 0;
			} else if (pad > 0 || (v = b64_value(c)) < 0)
				return false;
			acc = acc << 6 | (unsigned long)v;
		}
		out[o++] = (unsigned char)(acc >> 16);
		out[o++] = (unsigned char)(acc >> 8);
		out[o++] = (unsigned char)acc;
	}
	*outlen_r = o - pad;
	return true;
}

/* check_challenge - a CHALLENGE's text: present, and base64 */
static void
check_challenge(enum auth_mech mech, const char *challenge)
{
	unsigned char dec[64];
	size_t n;

	FUZZ_ASSERT(challenge != NULL);
	FUZZ_ASSERT(strlen(challenge) < sizeof(dec));
	FUZZ_ASSERT(ref_decode(challenge, dec, &n));
	if (mech == AUTH_MECH_PLAIN)
		FUZZ_ASSERT(n == 0);
	else
		FUZZ_ASSERT(n > 0);
}

/* check_lookup - auth_mech_lookup finds nothing, or a mechanism spelled like s */
static void
check_lookup(const char *s)
{
	int m = auth_mech_lookup(s);

	FUZZ_ASSERT(m == -1 || m == AUTH_MECH_PLAIN || m == AUTH_MECH_LOGIN);
	if (m >= 0)
		FUZZ_ASSERT(strcasecmp(s, auth_mech_name((enum auth_mech)m)) == 0);
}

/* field_eq - s is exactly the n octets at p (so p holds no NUL) */
static bool
field_eq(const char *s, const unsigned char *p, size_t n)
{
	return strlen(s) == n && memcmp(s, p, n) == 0;
}

/*
 * check_done - DONE: the fields are sane and are what the responses hold.
 * resp[0..nresp) are the lines that were decoded (initial one included).
 */
static void
check_done(struct auth_sasl *s, enum auth_mech mech, char *const *resp, size_t nresp)
{
	const char *user = auth_sasl_user(s), *pass = auth_sasl_password(s);
	const char *authzid = auth_sasl_authzid(s);
	const unsigned char *nul1, *nul2, *end;
	unsigned char *dec, *dec2;
	size_t n, n2;

	FUZZ_ASSERT(user != NULL && pass != NULL && authzid != NULL);
	FUZZ_ASSERT(user[0] != '\0' && strlen(user) <= AUTH_MAX_FIELD);
	FUZZ_ASSERT(pass[0] != '\0' && strlen(pass) <= AUTH_MAX_FIELD);
	FUZZ_ASSERT(strlen(authzid) <= AUTH_MAX_FIELD);
	FUZZ_ASSERT(authzid[0] == '\0' || strcmp(authzid, user) == 0);

	if (mech == AUTH_MECH_PLAIN) {
		FUZZ_ASSERT(nresp == 1);
		dec = malloc(strlen(resp[0]) / 4 * 3 + 1);
		FUZZ_ASSERT(dec != NULL);
		FUZZ_ASSERT(ref_decode(resp[0], dec, &n));
		end = dec + n;
		nul1 = memchr(dec, '\0', n);
		FUZZ_ASSERT(nul1 != NULL);
		nul2 = memchr(nul1 + 1, '\0', (size_t)(end - nul1 - 1));
		FUZZ_ASSERT(nul2 != NULL);
		FUZZ_ASSERT(memchr(nul2 + 1, '\0', (size_t)(end - nul2 - 1)) == NULL);
		FUZZ_ASSERT(field_eq(authzid, dec, (size_t)(nul1 - dec)));
		FUZZ_ASSERT(field_eq(user, nul1 + 1, (size_t)(nul2 - nul1 - 1)));
		FUZZ_ASSERT(field_eq(pass, nul2 + 1, (size_t)(end - nul2 - 1)));
		free(dec);
	} else {
		FUZZ_ASSERT(nresp == 2);
		dec = malloc(strlen(resp[0]) / 4 * 3 + 1);
		dec2 = malloc(strlen(resp[1]) / 4 * 3 + 1);
		FUZZ_ASSERT(dec != NULL && dec2 != NULL);
		FUZZ_ASSERT(ref_decode(resp[0], dec, &n));
		FUZZ_ASSERT(ref_decode(resp[1], dec2, &n2));
		FUZZ_ASSERT(field_eq(user, dec, n));
		FUZZ_ASSERT(field_eq(pass, dec2, n2));
		FUZZ_ASSERT(authzid[0] == '\0');
		free(dec);
		free(dec2);
	}
}

/* check_status - what one response's status says about that response */
static void
check_status(enum auth_sasl_status st, const char *line, bool initial)
{
	unsigned char *dec;
	size_t n;
	bool ok;

	FUZZ_ASSERT(st <= AUTH_SASL_MALFORMED);
	if (!initial && strcmp(line, "*") == 0) {
		FUZZ_ASSERT(st == AUTH_SASL_CANCEL);
		return;
	}
	FUZZ_ASSERT(st != AUTH_SASL_CANCEL);
	if (strlen(line) > AUTH_MAX_LINE) {
		FUZZ_ASSERT(st == AUTH_SASL_MALFORMED);
		return;
	}
	if (initial && strcmp(line, "=") == 0) {
		FUZZ_ASSERT(st != AUTH_SASL_BAD_BASE64 && st != AUTH_SASL_DONE);
		return;
	}
	dec = malloc(strlen(line) / 4 * 3 + 1);
	FUZZ_ASSERT(dec != NULL);
	ok = ref_decode(line, dec, &n);
	FUZZ_ASSERT(ok == (st != AUTH_SASL_BAD_BASE64));
	free(dec);
}

/* LLVMFuzzerTestOneInput - run one exchange over the lines of the input */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *lines[FUZZ_MAX_LINES], *resp[FUZZ_MAX_LINES];
	const char *p, *end, *nl, *challenge;
	enum auth_sasl_status st;
	enum auth_mech mech;
	struct auth_sasl *s;
	size_t nlines = 0, nresp = 0, i, n;
	bool initial;

	if (size < 1)
		return 0;
	mech = (data[0] & 1) ? AUTH_MECH_LOGIN : AUTH_MECH_PLAIN;
	initial = (data[0] & 2) != 0;
	FUZZ_ASSERT(auth_mech_lookup(auth_mech_name(mech)) == (int)mech);

	/* Lines, each in a buffer of exactly its length plus the NUL. */
	p = (const char *)data + 1;
	end = (const char *)data + size;
	while (p < end && nlines < FUZZ_MAX_LINES) {
		nl = memchr(p, '\n', (size_t)(end - p));
		n = (nl != NULL ? nl : end) - p;
		lines[nlines] = malloc(n + 1);
		FUZZ_ASSERT(lines[nlines] != NULL);
		memcpy(lines[nlines], p, n);
		lines[nlines][n] = '\0';
		check_lookup(lines[nlines]);
		nlines++;
		p += n + (nl != NULL);
	}

	s = auth_sasl_new(mech);
	FUZZ_ASSERT(s != NULL);
	i = 0;
	challenge = "unset";
	if (initial && nlines > 0) {
		st = auth_sasl_start(s, lines[i], &challenge);
		check_status(st, lines[i], true);
		if (strcmp(lines[i], "=") != 0)
			resp[nresp++] = lines[i];
		i++;
	} else {
		st = auth_sasl_start(s, NULL, &challenge);
		FUZZ_ASSERT(st == AUTH_SASL_CHALLENGE);
	}
	while (st == AUTH_SASL_CHALLENGE) {
		check_challenge(mech, challenge);
		if (i >= nlines)
			break;		/* the client went away mid-exchange */
		challenge = "unset";
		st = auth_sasl_step(s, lines[i], &challenge);
		check_status(st, lines[i], false);
		resp[nresp++] = lines[i];
		i++;
	}
	if (st == AUTH_SASL_DONE)
		check_done(s, mech, resp, nresp);
	auth_sasl_free(s);

	for (i = 0; i < nlines; i++)
		free(lines[i]);
	return 0;
}
