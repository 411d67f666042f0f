/*
 * sockin.c - plain-socket reads without FIONREAD and without the 4 KB cap
 *
 * One read(2) per readiness into a per-thread scratch buffer, then a copy
 * into the input buffer: a session holding half a line keeps a small chain,
 * not a 64 KB reservation.  Reading is level-triggered like libevent's, one
 * read per loop turn, so a busy client cannot starve the others.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "sockin.h"
#include "util.h"

struct sockin {
	struct event *ev;
	struct bufferevent *bev;
	struct evbuffer *in;
	struct evbuffer_cb_entry *drain_cb;	/* resumes reading below high */
	size_t high;
	struct timeval timeout;		/* zero: none */
	bool enabled;			/* wanted by the owner */
	bool suspended;			/* full: waiting for the buffer to drain */
	bufferevent_data_cb read_cb;
	bufferevent_event_cb event_cb;
	void *arg;
};

static _Thread_local char scratch[SOCKIN_READ_MAX];

/* arm - add or remove the read event to match enabled and suspended */
static void
arm(struct sockin *si)
{
	if (si->enabled && !si->suspended) {
		event_add(si->ev, si->timeout.tv_sec ? &si->timeout : NULL);
		if (!si->timeout.tv_sec)
			event_remove_timer(si->ev);	/* event_add(NULL) keeps an earlier one */
	} else {
		event_del(si->ev);
	}
}

/* drain_cb - the owner took input: resume reading once below high */
static void
drain_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct sockin *si = arg;

	(void)info;
	if (si->suspended && evbuffer_get_length(buf) < si->high) {
		si->suspended = false;
		evbuffer_cb_clear_flags(buf, si->drain_cb, EVBUFFER_CB_ENABLED);
		arm(si);
	}
}

/* fail - EOF, error or timeout: stop, then tell the owner (who may free us) */
static void
fail(struct sockin *si, short what)
{
	si->enabled = false;
	arm(si);
	si->event_cb(si->bev, (short)(BEV_EVENT_READING | what), si->arg);
}

/* read_ev - readable, or the timeout */
static void
read_ev(evutil_socket_t fd, short what, void *arg)
{
	struct sockin *si = arg;
	size_t have = evbuffer_get_length(si->in), want = sizeof(scratch);
	ssize_t n;

	if (what & EV_TIMEOUT) {
		fail(si, BEV_EVENT_TIMEOUT);
		return;
	}
	if (have >= si->high) {
		si->suspended = true;
		evbuffer_cb_set_flags(si->in, si->drain_cb, EVBUFFER_CB_ENABLED);
		arm(si);
		return;
	}
	if (want > si->high - have)
		want = si->high - have;
	n = read(fd, scratch, want);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		fail(si, BEV_EVENT_ERROR);
		return;
	}
	if (n == 0) {
		fail(si, BEV_EVENT_EOF);
		return;
	}
	/* A socket bufferevent keeps its input's end frozen outside its own reads. */
	evbuffer_unfreeze(si->in, 0);
	if (evbuffer_add(si->in, scratch, (size_t)n) != 0)
		fatal("evbuffer_add: out of memory");
	evbuffer_freeze(si->in, 0);
	si->read_cb(si->bev, si->arg);
}

struct sockin *
sockin_new(struct event_base *base, struct bufferevent *bev, size_t high,
    bufferevent_data_cb read_cb, bufferevent_event_cb event_cb, void *arg)
{
	struct sockin *si = xcalloc(1, sizeof(*si));

	si->bev = bev;
	si->in = bufferevent_get_input(bev);
	si->high = high;
	si->read_cb = read_cb;
	si->event_cb = event_cb;
	si->arg = arg;
	si->ev = event_new(base, bufferevent_getfd(bev), EV_READ | EV_PERSIST, read_ev, si);
	if (si->ev == NULL)
		fatal("event_new failed");
	si->drain_cb = evbuffer_add_cb(si->in, drain_cb, si);
	if (si->drain_cb == NULL)
		fatal("evbuffer_add_cb failed");
	evbuffer_cb_clear_flags(si->in, si->drain_cb, EVBUFFER_CB_ENABLED);
	return si;
}

void
sockin_free(struct sockin *si)
{
	if (si == NULL)
		return;
	event_free(si->ev);
	evbuffer_remove_cb_entry(si->in, si->drain_cb);
	free(si);
}

void
sockin_enable(struct sockin *si)
{
	si->enabled = true;
	arm(si);
}

void
sockin_disable(struct sockin *si)
{
	si->enabled = false;
	arm(si);
}

void
sockin_set_timeout(struct sockin *si, unsigned secs)
{
	si->timeout.tv_sec = secs;
	si->timeout.tv_usec = 0;
	arm(si);
}

void
sockin_timeouts(struct sockin *si, struct bufferevent *bev, unsigned rsecs, unsigned wsecs)
{
	struct timeval r = { rsecs, 0 }, w = { wsecs, 0 };

	if (si != NULL) {
		sockin_set_timeout(si, rsecs);
		bufferevent_set_timeouts(bev, NULL, wsecs ? &w : NULL);
		return;
	}
	bufferevent_set_timeouts(bev, rsecs ? &r : NULL, wsecs ? &w : NULL);
}

struct bufferevent *
sockin_starttls(struct sockin **sin, struct event_base *base, struct bufferevent *bev, SSL *ssl,
    enum bufferevent_ssl_state state, bufferevent_data_cb read_cb, bufferevent_data_cb write_cb,
    bufferevent_event_cb event_cb, void *arg)
{
	struct bufferevent *tbev;

	sockin_free(*sin);
	*sin = NULL;
	tbev = bufferevent_openssl_filter_new(base, bev, ssl, state, BEV_OPT_CLOSE_ON_FREE);
	if (tbev == NULL)
		fatal("bufferevent_openssl_filter_new failed");
	bufferevent_setcb(tbev, read_cb, write_cb, event_cb, arg);
	bufferevent_enable(tbev, EV_READ | EV_WRITE);
	return tbev;
}
