/*
 * check_buf.c - unit tests for the growable buffer (buf.c), the string and
 * allocation helpers (util.c) and log_escape (log.c).
 *
 * Table-driven where the cases are data.  Never depends on the locale: the
 * case-insensitive compares must be ASCII-only whatever LC_ALL says.
 */
#include "config.h"

#include <check.h>
#include <locale.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "util.h"
#include "unit.h"

/* check_invariants - len < cap, data NUL-terminated at len */
static void
check_invariants(const struct buf *b)
{
	if (b->data == NULL) {
		ck_assert_uint_eq(b->len, 0);
		ck_assert_uint_eq(b->cap, 0);
		return;
	}
	ck_assert_uint_lt(b->len, b->cap);
	ck_assert_int_eq(b->data[b->len], '\0');
}

START_TEST(test_buf_init_free)
{
	struct buf b;

	buf_init(&b);
	ck_assert_ptr_null(b.data);
	check_invariants(&b);
	buf_reset(&b);		/* on a never-allocated buffer: harmless */
	check_invariants(&b);
	buf_free(&b);
	check_invariants(&b);
	buf_puts(&b, "x");
	buf_free(&b);
	ck_assert_ptr_null(b.data);
	ck_assert_uint_eq(b.len, 0);
	ck_assert_uint_eq(b.cap, 0);
	buf_free(&b);		/* twice: still harmless */
}
END_TEST

/*
 * test_buf_growth - 20,000 appends of 0 to 36 octets (359,830 in all) cross
 * every doubling from 64 to 512 KiB.  What each append must leave is
 * checked in plain C and asserted once at the end: every ck_assert is a
 * write to Check's pipe, and 400,000 of them ran into the 4 s timeout on a
 * loaded machine.
 */
START_TEST(test_buf_growth)
{
	enum { APPENDS = 20000, CHUNK = 37 };
	struct buf b;
	size_t i, j, off = 0, bad = SIZE_MAX, ncaps = 0, cap = 0;
	char chunk[CHUNK], *want = xmalloc((size_t)APPENDS * CHUNK);

	buf_init(&b);
	for (i = 0; i < APPENDS; i++) {
		size_t n = i % CHUNK;

		for (j = 0; j < n; j++)
			chunk[j] = (char)('a' + (i + j) % 26);
		memcpy(want + off, chunk, n);
		off += n;
		buf_append(&b, chunk, n);
		if (b.cap != cap) {
			/* the first allocation is 64 octets, then each growth doubles */
			if (b.cap != (cap ? 2 * cap : 64) && bad == SIZE_MAX)
				bad = i;
			cap = b.cap;
			ncaps++;
		}
		if (!(b.len == off && b.len < b.cap && b.data[b.len] == '\0') && bad == SIZE_MAX)
			bad = i;
	}
	ck_assert_msg(bad == SIZE_MAX, "append %zu left len %zu cap %zu", bad, b.len, b.cap);
	ck_assert_uint_eq(b.len, 359830);
	ck_assert_uint_eq(ncaps, 14);		/* 64, 128, ... 512 KiB */
	ck_assert_uint_eq(b.cap, 524288);
	ck_assert_mem_eq(b.data, want, b.len);
	check_invariants(&b);
	free(want);
	buf_free(&b);
}
END_TEST

START_TEST(test_buf_reserve)
{
	struct buf b;
	char *before;

	buf_init(&b);
	buf_puts(&b, "abc");
	buf_reserve(&b, 1000);
	ck_assert_uint_eq(b.len, 3);
	ck_assert_uint_ge(b.cap, 3 + 1000 + 1);
	ck_assert_str_eq(b.data, "abc");
	/* reserved room: appends up to it never move the data */
	before = b.data;
	for (int i = 0; i < 1000; i++)
		buf_putc(&b, 'x');
	ck_assert_ptr_eq(b.data, before);
	ck_assert_uint_eq(b.len, 1003);
	check_invariants(&b);
	buf_reset(&b);
	ck_assert_uint_eq(b.len, 0);
	ck_assert_str_eq(b.data, "");
	ck_assert_ptr_eq(b.data, before);	/* reset keeps storage */
	buf_free(&b);
}
END_TEST

START_TEST(test_buf_reserve_overflow)
{
	struct buf b;

	buf_init(&b);
	buf_puts(&b, "abc");
	buf_reserve(&b, SIZE_MAX - 2);	/* len + extra + 1 overflows: fatal */
}
END_TEST

START_TEST(test_buf_embedded_nul)
{
	static const char bin[] = { 'a', '\0', 'b', '\0', '\0', 'c' };
	struct buf b;

	buf_init(&b);
	buf_append(&b, bin, sizeof(bin));
	ck_assert_uint_eq(b.len, sizeof(bin));
	ck_assert(memcmp(b.data, bin, sizeof(bin)) == 0);
	check_invariants(&b);
	buf_puts(&b, "d\0e");		/* a C string ends at its NUL */
	ck_assert_uint_eq(b.len, sizeof(bin) + 1);
	buf_putc(&b, '\0');
	ck_assert_uint_eq(b.len, sizeof(bin) + 2);
	buf_consume(&b, 2);
	ck_assert_uint_eq(b.len, sizeof(bin));
	ck_assert(memcmp(b.data, "b\0\0cd\0", 6) == 0);
	check_invariants(&b);
	buf_append(&b, NULL, 0);	/* zero bytes from nowhere */
	ck_assert_uint_eq(b.len, sizeof(bin));
	buf_free(&b);
}
END_TEST

static const struct {
	const char *init;
	size_t n;
	const char *left;
} consume_cases[] = {
	{ "hello world", 0, "hello world" },
	{ "hello world", 1, "ello world" },
	{ "hello world", 6, "world" },
	{ "hello world", 10, "d" },
	{ "hello world", 11, "" },
	{ "hello world", 12, "" },
	{ "hello world", SIZE_MAX, "" },
	{ "", 0, "" },
	{ "", 5, "" },
};

START_TEST(test_buf_consume)
{
	struct buf b;

	buf_init(&b);
	buf_puts(&b, consume_cases[_i].init);
	buf_consume(&b, consume_cases[_i].n);
	ck_assert_uint_eq(b.len, strlen(consume_cases[_i].left));
	if (b.data != NULL)
		ck_assert_str_eq(b.data, consume_cases[_i].left);
	check_invariants(&b);
	/* still usable afterwards */
	buf_puts(&b, "!");
	ck_assert_uint_eq(b.len, strlen(consume_cases[_i].left) + 1);
	ck_assert_int_eq(b.data[b.len - 1], '!');
	buf_free(&b);
}
END_TEST

START_TEST(test_buf_printf)
{
	struct buf b;
	char big[5000];

	buf_init(&b);
	buf_printf(&b, "%d-%s", 42, "x");
	ck_assert_str_eq(b.data, "42-x");
	buf_printf(&b, "%s", "");
	ck_assert_str_eq(b.data, "42-x");
	buf_printf(&b, "|%5.2f|%%|%c|%zu|", 3.14159, 'q', (size_t)7);
	ck_assert_str_eq(b.data, "42-x| 3.14|%|q|7|");
	ck_assert_uint_eq(b.len, strlen(b.data));
	/* longer than any capacity so far: grows in one go */
	memset(big, 'z', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	buf_printf(&b, "<%s>", big);
	ck_assert_uint_eq(b.len, strlen("42-x| 3.14|%|q|7|") + sizeof(big) - 1 + 2);
	ck_assert_int_eq(b.data[b.len - 1], '>');
	ck_assert_int_eq(b.data[b.len - 2], 'z');
	check_invariants(&b);
	/* many small ones */
	buf_reset(&b);
	for (int i = 0; i < 10000; i++)
		buf_printf(&b, "%d,", i % 10);
	ck_assert_uint_eq(b.len, 20000);
	ck_assert(strncmp(b.data, "0,1,2,3,4,5,6,7,8,9,0,", 22) == 0);
	check_invariants(&b);
	buf_free(&b);
}
END_TEST

static const struct {
	const char *src;
	size_t size;
	const char *want;
	bool ok;
} copy_cases[] = {
	{ "abc", 4, "abc", true },
	{ "abc", 10, "abc", true },
	{ "abc", 3, "ab", false },
	{ "abc", 2, "a", false },
	{ "abc", 1, "", false },
	{ "", 1, "", true },
	{ "", 5, "", true },
};

START_TEST(test_str_copy)
{
	char dst[16];

	memset(dst, 'X', sizeof(dst));
	ck_assert_int_eq(str_copy(dst, copy_cases[_i].src, copy_cases[_i].size),
	    copy_cases[_i].ok);
	ck_assert_str_eq(dst, copy_cases[_i].want);
	/* nothing written past size */
	ck_assert_int_eq(dst[copy_cases[_i].size], 'X');
}
END_TEST

START_TEST(test_str_copy_zero)
{
	char dst[4] = "XYZ";

	ck_assert(!str_copy(dst, "abc", 0));
	ck_assert_str_eq(dst, "XYZ");
}
END_TEST

/* sign - -1, 0 or 1 */
static int
sign(int v)
{
	return (v > 0) - (v < 0);
}

static const struct {
	const char *a;
	const char *b;
	size_t n;		/* for str_ncasecmp */
	int cmp;		/* sign of str_casecmp */
	int ncmp;		/* sign of str_ncasecmp */
} case_cases[] = {
	{ "abc", "ABC", 3, 0, 0 },
	{ "MAIL FROM", "mail from", 9, 0, 0 },
	{ "abc", "abd", 3, -1, -1 },
	{ "abd", "ABC", 3, 1, 1 },
	{ "abcdef", "ABCxyz", 3, -1, 0 },
	{ "abcdef", "ABCxyz", 4, -1, -1 },
	{ "ab", "AB", 10, 0, 0 },
	{ "ab", "abc", 2, -1, 0 },
	{ "ab", "abc", 3, -1, -1 },
	{ "abc", "ab", 3, 1, 1 },
	{ "", "", 1, 0, 0 },
	{ "a", "", 1, 1, 1 },
	{ "", "a", 1, -1, -1 },
	{ "x", "y", 0, -1, 0 },
	/* folding is by ASCII letters only: '[' (0x5b) vs '{' (0x7b), '@' vs '`' */
	{ "[", "{", 1, -1, -1 },
	{ "@", "`", 1, -1, -1 },
	{ "Z", "a", 1, 1, 1 },
	/* bytes past 0x7f are compared, never folded, and sort above ASCII */
	{ "\xc3\xa9", "\xc3\x89", 2, 1, 1 },
	{ "\xe9", "\xc9", 1, 1, 1 },
	{ "\x80", "z", 1, 1, 1 },
	{ "I", "i", 1, 0, 0 },	/* not Turkish, whatever the locale */
};

START_TEST(test_str_casecmp)
{
	setlocale(LC_ALL, "");
	ck_assert_msg(sign(str_casecmp(case_cases[_i].a, case_cases[_i].b)) == case_cases[_i].cmp,
	    "str_casecmp(\"%s\", \"%s\")", case_cases[_i].a, case_cases[_i].b);
	ck_assert_int_eq(sign(str_casecmp(case_cases[_i].b, case_cases[_i].a)),
	    -case_cases[_i].cmp);
	ck_assert_msg(sign(str_ncasecmp(case_cases[_i].a, case_cases[_i].b, case_cases[_i].n)) ==
	    case_cases[_i].ncmp, "str_ncasecmp(\"%s\", \"%s\", %zu)", case_cases[_i].a,
	    case_cases[_i].b, case_cases[_i].n);
}
END_TEST

START_TEST(test_str_lower)
{
	char s[] = "MiXeD 123 [@] \xc3\x89T\xc3\x89";

	str_lower(s);
	ck_assert_str_eq(s, "mixed 123 [@] \xc3\x89t\xc3\x89");
}
END_TEST

START_TEST(test_xalloc)
{
	char *p, *big;
	int *a;

	p = xasprintf("%s=%d", "a", 1);
	ck_assert_str_eq(p, "a=1");
	free(p);
	p = xasprintf("%s", "");
	ck_assert_str_eq(p, "");
	free(p);
	big = xmalloc(5001);
	memset(big, 'q', 5000);
	big[5000] = '\0';
	p = xasprintf("[%s]", big);
	ck_assert_uint_eq(strlen(p), 5002);
	ck_assert_int_eq(p[5001], ']');
	free(p);
	free(big);

	p = xstrndup("abcdef", 3);
	ck_assert_str_eq(p, "abc");
	free(p);
	p = xstrndup("ab", 10);
	ck_assert_str_eq(p, "ab");
	free(p);
	p = xstrdup("");
	ck_assert_str_eq(p, "");
	free(p);

	/* zero sizes still give a pointer to free */
	p = xmalloc(0);
	ck_assert_ptr_nonnull(p);
	free(p);
	a = xcalloc(4, sizeof(*a));
	ck_assert(a[0] == 0 && a[3] == 0);
	a = xreallocarray(a, 1000, sizeof(*a));
	a[999] = 7;
	ck_assert_int_eq(a[0], 0);
	free(a);
}
END_TEST

START_TEST(test_xreallocarray_overflow)
{
	xreallocarray(NULL, SIZE_MAX / 2, 4);	/* n * size overflows: fatal */
}
END_TEST

static const struct {
	const char *src;
	size_t srclen;
	size_t dstsize;
	const char *want;
} escape_cases[] = {
	{ "plain text", 10, 64, "plain text" },
	{ "", 0, 64, "" },
	{ "a\"b", 3, 64, "a\\x22b" },
	{ "a\\b", 3, 64, "a\\x5cb" },
	{ "\r\n", 2, 64, "\\x0d\\x0a" },
	{ "tab\there", 8, 64, "tab\\x09here" },
	{ "del\x7f", 4, 64, "del\\x7f" },
	{ "caf\xc3\xa9", 5, 64, "caf\\xc3\\xa9" },
	{ "\xff", 1, 64, "\\xff" },
	{ "a\0b", 3, 64, "a\\x00b" },		/* srclen, not the NUL, ends it */
	{ "abcdef", 3, 64, "abc" },		/* only srclen bytes */
	{ "~ !#$%&'()*+,-./:;<=>?@[]^_`{|}", 31, 64, "~ !#$%&'()*+,-./:;<=>?@[]^_`{|}" },
	/* truncation: "..." plus NUL always fit, an escape is never cut */
	{ "abcdefghij", 10, 8, "abcd..." },
	{ "abcdefghij", 10, 9, "abcde..." },
	{ "ab\"cdefgh", 9, 9, "ab..." },
	{ "ab\"cdefgh", 9, 10, "ab\\x22..." },
	{ "\r\r\r\r\r\r", 6, 12, "\\x0d\\x0d..." },
	{ "abcdefghij", 10, 4, "..." },
	{ "abcdefghij", 10, 3, "" },
	{ "abcdefghij", 10, 1, "" },
};

START_TEST(test_log_escape)
{
	char dst[128];

	memset(dst, 'X', sizeof(dst));
	ck_assert_ptr_eq(log_escape(dst, escape_cases[_i].dstsize, escape_cases[_i].src,
	    escape_cases[_i].srclen), dst);
	ck_assert_str_eq(dst, escape_cases[_i].want);
	ck_assert_uint_lt(strlen(dst), escape_cases[_i].dstsize);
	ck_assert_int_eq(dst[escape_cases[_i].dstsize], 'X');
}
END_TEST

START_TEST(test_log_escape_zero)
{
	char dst[4] = "XYZ";

	ck_assert_ptr_eq(log_escape(dst, 0, "abc", 3), dst);
	ck_assert_str_eq(dst, "XYZ");
}
END_TEST

START_TEST(test_log_escape_all_bytes)
{
	char src[256], dst[2048];
	size_t i;

	for (i = 0; i < sizeof(src); i++)
		src[i] = (char)i;
	log_escape(dst, sizeof(dst), src, sizeof(src));
	/* 95 printable bytes, 2 of them escaped; 161 others escaped */
	ck_assert_uint_eq(strlen(dst), 93 + 4 * (256 - 93));
	for (i = 0; dst[i]; i++)
		ck_assert(dst[i] >= 0x20 && dst[i] < 0x7f && dst[i] != '"');
}
END_TEST

/* buf_suite - buf, util and log_escape tests */
static Suite *
buf_suite(void)
{
	Suite *s = suite_create("buf");
	TCase *tc;

	tc = tcase_create("buf");
	tcase_add_test(tc, test_buf_init_free);
	tcase_add_test(tc, test_buf_growth);
	tcase_add_test(tc, test_buf_reserve);
	tcase_add_test_raise_signal(tc, test_buf_reserve_overflow, SIGABRT);
	tcase_add_test(tc, test_buf_embedded_nul);
	tcase_add_loop_test(tc, test_buf_consume, 0, (int)ARRAY_SIZE(consume_cases));
	tcase_add_test(tc, test_buf_printf);
	suite_add_tcase(s, tc);

	tc = tcase_create("util");
	tcase_add_loop_test(tc, test_str_copy, 0, (int)ARRAY_SIZE(copy_cases));
	tcase_add_test(tc, test_str_copy_zero);
	tcase_add_loop_test(tc, test_str_casecmp, 0, (int)ARRAY_SIZE(case_cases));
	tcase_add_test(tc, test_str_lower);
	tcase_add_test(tc, test_xalloc);
	tcase_add_test_raise_signal(tc, test_xreallocarray_overflow, SIGABRT);
	suite_add_tcase(s, tc);

	tc = tcase_create("log_escape");
	tcase_add_loop_test(tc, test_log_escape, 0, (int)ARRAY_SIZE(escape_cases));
	tcase_add_test(tc, test_log_escape_zero);
	tcase_add_test(tc, test_log_escape_all_bytes);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(buf_suite)
