/*
 * fuzz_from.c - libFuzzer target for sender_login_check_from (policy/sender_login.c).
 *
 * Octet 0 chooses the setup: bit 0 the ownership source (a small fixed map,
 * loaded once in LLVMFuzzerInitialize, or no map) and bits 1-3 the login
 * (listed in the map or not, an address or not, empty).  The rest is the
 * From: value, copied into a buffer of exactly its size so a read past len
 * shows under ASan.  Invariants: the check is deterministic and does not
 * depend on whether a result is asked for; OK means at least one mailbox,
 * no foreign mailbox and no reason; MISMATCH names a canonical mailbox that
 * sender_login_allowed refuses for the login; UNPARSEABLE always has a
 * static reason and names no mailbox.  Any broken invariant aborts, which
 * libFuzzer reports as a crash.
 *
 * The map file is written to a private temporary file, loaded, and removed
 * at once; nothing else touches files or global state.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "sender_login.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(c) do {						\
	if (!(c)) {							\
		fprintf(stderr, "%s:%d: invariant failed: %s\n",	\
		    __FILE__, __LINE__, #c);				\
		abort();						\
	}								\
} while (0)

/* The fixed map: plain and address logins, wildcards, quoting, UTF-8, CRLF. */
static const char fuzz_map_text[] =
    "# fuzz_from map\n"
    "alice\talice@example.test, a.smith@example.test\n"
    "bob\tbob@example.test @bob.example.test\n"
    "\t\"bob the builder\"@example.test\t# continues bob's line\n"
    "alice@example.test\talice@example.test\r\n"
    "Carol@Example.Test  carol@EXAMPLE.test, \"#carol\"@example.test\n"
    "j\xc3\xbcrgen\tj\xc3\xbcrgen@b\xc3\xbc" "cher.example\n"
    "postie\t@example.test, postmaster@[192.0.2.1]\n";

/* Logins, by octet 0 bits 1-3. */
static const char *const fuzz_logins[8] = {
	"alice",
	"bob",
	"alice@example.test",
	"Carol@Example.Test",
	"j\xc3\xbcrgen",
	"postie",
	"mallory@evil.test",	/* not in the map; owns itself without one */
	"",			/* never owns anything */
};

static struct sender_login_map *fuzz_map;

/* LLVMFuzzerInitialize - write, load and remove the fixed map */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("TMPDIR");
	char path[256];
	struct buf errors;
	FILE *f;
	int fd;

	(void)argc;
	(void)argv;
	snprintf(path, sizeof(path), "%s/fuzz_from.XXXXXX",
	    dir != NULL && strlen(dir) < 200 ? dir : "/tmp");
	fd = mkstemp(path);
	FUZZ_ASSERT(fd >= 0);
	f = fdopen(fd, "w");
	FUZZ_ASSERT(f != NULL);
	FUZZ_ASSERT(fwrite(fuzz_map_text, 1, sizeof(fuzz_map_text) - 1, f) ==
	    sizeof(fuzz_map_text) - 1);
	FUZZ_ASSERT(fclose(f) == 0);
	buf_init(&errors);
	fuzz_map = sender_login_map_load(path, &errors);
	unlink(path);
	if (fuzz_map == NULL)
		fprintf(stderr, "fuzz_from: map: %.*s\n", (int)errors.len,
		    errors.len ? errors.data : "");
	FUZZ_ASSERT(fuzz_map != NULL);
	FUZZ_ASSERT(sender_login_map_logins(fuzz_map) == 6);
	buf_free(&errors);
	return 0;
}

/* LLVMFuzzerTestOneInput - check one From: value twice, with and without a result */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sender_login_from_result res, res2;
	const struct sender_login_map *m;
	enum sender_login_from r, r2, r3;
	const char *login;
	char *value;
	size_t len;

	if (size < 1)
		return 0;
	m = (data[0] & 1) ? fuzz_map : NULL;
	login = fuzz_logins[(data[0] >> 1) & 7];
	len = size - 1;
	/* Exactly len octets, so any read past the end is an ASan report. */
	value = malloc(len);
	FUZZ_ASSERT(value != NULL || len == 0);
	if (len > 0)
		memcpy(value, data + 1, len);

	memset(&res, 0xa5, sizeof(res));
	memset(&res2, 0x5a, sizeof(res2));
	r = sender_login_check_from(m, login, value, len, &res);
	r2 = sender_login_check_from(m, login, value, len, &res2);
	r3 = sender_login_check_from(m, login, value, len, NULL);
	FUZZ_ASSERT(r <= SENDER_LOGIN_FROM_UNPARSEABLE);
	FUZZ_ASSERT(r == r2 && r == r3);
	FUZZ_ASSERT(res.nmailboxes == res2.nmailboxes);
	FUZZ_ASSERT(res.why == res2.why);
	FUZZ_ASSERT(memchr(res.mailbox, '\0', sizeof(res.mailbox)) != NULL);
	FUZZ_ASSERT(strcmp(res.mailbox, res2.mailbox) == 0);
	FUZZ_ASSERT(strcmp(sender_login_from_name(r), "?") != 0);

	switch (r) {
	case SENDER_LOGIN_FROM_OK:
		FUZZ_ASSERT(res.nmailboxes >= 1);
		FUZZ_ASSERT(res.why == NULL);
		FUZZ_ASSERT(res.mailbox[0] == '\0');
		FUZZ_ASSERT(login[0] != '\0');
		FUZZ_ASSERT(len <= SENDER_LOGIN_FROM_MAX);
		break;
	case SENDER_LOGIN_FROM_MISMATCH:
		FUZZ_ASSERT(res.nmailboxes >= 1);
		FUZZ_ASSERT(res.why == NULL);
		FUZZ_ASSERT(res.mailbox[0] != '\0');
		FUZZ_ASSERT(!sender_login_allowed(m, login, res.mailbox));
		FUZZ_ASSERT(len <= SENDER_LOGIN_FROM_MAX);
		break;
	case SENDER_LOGIN_FROM_UNPARSEABLE:
		FUZZ_ASSERT(res.why != NULL && res.why[0] != '\0');
		FUZZ_ASSERT(res.mailbox[0] == '\0');
		break;
	}
	/* Never a mailbox count larger than the value could hold. */
	FUZZ_ASSERT(res.nmailboxes <= len);
	free(value);
	return 0;
}
