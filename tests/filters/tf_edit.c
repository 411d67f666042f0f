/*
 * tf_edit.c - test-edit: a test filter that edits the envelope and the
 * message at end of message, as a milter would, to test the edits through
 * whole SMTP sessions.  Its [filter test-edit] section says what to do:
 *   change_from = ADDR [PARAMS]      new sender ("<>" for the null sender)
 *   add_rcpt = ADDR [PARAMS] | ...   recipients to add, '|' between them
 *   delete_rcpt = ADDR ...           recipients to delete, space between them
 *   replace_body = TEXT              new body ("\n" for a line end)
 *   add_header = Name: value         a header at the end of the block
 * (plus the chain's timeout and default_action).  Any other key is an
 * error.  Inline only; logs event=testfilter filter=test-edit edits=N.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "filter.h"
#include "log.h"
#include "util.h"
#include "testfilters.h"

struct tf_edit_item {
	char *addr;
	char *params;		/* NULL: none */
};

struct tf_edit {
	struct tf_edit_item from;	/* addr NULL: no change */
	struct tf_edit_item *add;
	size_t nadd;
	char **del;
	size_t ndel;
	char *body;		/* CRLF line ends; NULL: keep */
	char *hname, *hvalue;	/* NULL: no header */
};

/* tf_edit_item_parse - "ADDR [PARAMS]", blanks around trimmed; false if empty */
static bool
tf_edit_item_parse(const char *s, size_t len, struct tf_edit_item *it)
{
	const char *end = s + len, *sp;

	while (s < end && *s == ' ')
		s++;
	while (end > s && end[-1] == ' ')
		end--;
	if (s == end)
		return false;
	sp = memchr(s, ' ', (size_t)(end - s));
	it->addr = xstrndup(s, sp ? (size_t)(sp - s) : (size_t)(end - s));
	if (sp != NULL) {
		while (*sp == ' ')
			sp++;
		it->params = xstrndup(sp, (size_t)(end - sp));
	}
	return true;
}

/* tf_edit_body - TEXT with "\n" escapes as a body with CRLF line ends */
static char *
tf_edit_body(const char *v)
{
	struct buf b;

	buf_init(&b);
	for (; *v; v++) {
		if (v[0] == '\\' && v[1] == 'n') {
			buf_puts(&b, "\r\n");
			v++;
		} else {
			buf_putc(&b, *v);
		}
	}
	if (b.len < 2 || memcmp(b.data + b.len - 2, "\r\n", 2) != 0)
		buf_puts(&b, "\r\n");
	return b.data;
}

/* tf_edit_destroy - free an instance */
static void
tf_edit_destroy(void *inst)
{
	struct tf_edit *f = inst;
	size_t i;

	if (f == NULL)
		return;
	free(f->from.addr);
	free(f->from.params);
	for (i = 0; i < f->nadd; i++) {
		free(f->add[i].addr);
		free(f->add[i].params);
	}
	free(f->add);
	for (i = 0; i < f->ndel; i++)
		free(f->del[i]);
	free(f->del);
	free(f->body);
	free(f->hname);
	free(f->hvalue);
	free(f);
}

/* tf_edit_key - one key of the section; false + *err_r if it is not ours or is bad */
static bool
tf_edit_key(struct tf_edit *f, const char *key, const char *v, char **err_r)
{
	const char *p, *bar;

	if (strcmp(key, "change_from") == 0) {
		if (tf_edit_item_parse(v, strlen(v), &f->from))
			return true;
	} else if (strcmp(key, "add_rcpt") == 0) {
		for (p = v; *p; p = bar ? bar + 1 : p + strlen(p)) {
			bar = strchr(p, '|');
			f->add = xreallocarray(f->add, f->nadd + 1, sizeof(*f->add));
			memset(&f->add[f->nadd], 0, sizeof(*f->add));
			if (tf_edit_item_parse(p, bar ? (size_t)(bar - p) : strlen(p), &f->add[f->nadd]))
				f->nadd++;
		}
		if (f->nadd > 0)
			return true;
	} else if (strcmp(key, "delete_rcpt") == 0) {
		char *copy = xstrdup(v), *tok, *save = NULL;

		for (tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
			f->del = xreallocarray(f->del, f->ndel + 1, sizeof(*f->del));
			f->del[f->ndel++] = xstrdup(tok);
		}
		free(copy);
		if (f->ndel > 0)
			return true;
	} else if (strcmp(key, "replace_body") == 0) {
		f->body = tf_edit_body(v);
		return true;
	} else if (strcmp(key, "add_header") == 0) {
		const char *colon = strchr(v, ':');

		if (colon != NULL && colon > v) {
			f->hname = xstrndup(v, (size_t)(colon - v));
			f->hvalue = xstrdup(colon + 1);
			return true;
		}
	} else if (strcmp(key, "timeout") == 0 || strcmp(key, "default_action") == 0) {
		return true;	/* the chain's */
	} else {
		*err_r = xasprintf("filter \"test-edit\": unknown key \"%s\"", key);
		return false;
	}
	*err_r = xasprintf("filter \"test-edit\": %s \"%s\": bad value", key, v);
	return false;
}

/* tf_edit_configure - read the section */
static void *
tf_edit_configure(const struct conf *conf, const struct conf_section *sec, char **err_r)
{
	struct tf_edit *f = xcalloc(1, sizeof(*f));
	size_t i;

	(void)conf;
	for (i = 0; sec != NULL && i < sec->nkv; i++) {
		if (!tf_edit_key(f, sec->kv[i].key, sec->kv[i].value, err_r)) {
			tf_edit_destroy(f);
			return NULL;
		}
	}
	return f;
}

/* tf_edit_eom - queue the configured edits */
static enum filter_verdict
tf_edit_eom(void *inst, struct filter_ctx *ctx, struct filter_reply *r)
{
	struct tf_edit *f = inst;
	size_t i, n = 0;

	(void)r;
	if (f->from.addr != NULL) {
		filter_change_from(ctx->txn, f->from.addr, f->from.params);
		n++;
	}
	for (i = 0; i < f->ndel; i++, n++)
		filter_delete_rcpt(ctx->txn, f->del[i]);
	for (i = 0; i < f->nadd; i++, n++)
		filter_add_rcpt(ctx->txn, f->add[i].addr, f->add[i].params);
	if (f->body != NULL) {
		filter_replace_body(ctx->txn, f->body, strlen(f->body));
		n++;
	}
	if (f->hname != NULL) {
		filter_add_header(ctx->txn, f->hname, f->hvalue);
		n++;
	}
	log_info("id=" SESSION_ID_FMT " event=testfilter filter=test-edit edits=%zu",
	    SESSION_ID(ctx->sess->id), n);
	return FILTER_CONTINUE;
}

const struct filter_ops tf_edit_ops = {
	.name = "test-edit",
	.configure = tf_edit_configure,
	.destroy = tf_edit_destroy,
	.eom = tf_edit_eom,
};
