/*
 * smtp_proxy.c - a session's PROXY protocol header ([listener]
 * proxy_protocol = yes): read on the session's loop before anything else,
 * then the session goes on as if the client in the header had connected.
 *
 * The balancer must be inside proxy_trusted, and its header must come
 * whole within proxy_timeout, once; otherwise the connection ends with no
 * SMTP reply and an event=proxy_refused line that says why.  A header with
 * addresses makes its source the session's client everywhere (s->addr,
 * the filters' client_addr, client_sa, client_port, rdns, Received:, AUTH
 * failure counters) and its destination the local address; the balancer's
 * address goes to the filters' proxy_client.  v2 LOCAL, v1 UNKNOWN and v2
 * UNSPEC/UNIX keep the socket's addresses, as Postfix does.
 *
 * Must never: greet, reply or run a filter before the header is taken
 * (only the 421 of a listener over max_sessions goes out before), or take
 * more than the header (what follows is the client's SMTP).
 */
#include "config.h"

#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "conf.h"
#include "log.h"
#include "proxy.h"
#include "server.h"
#include "util.h"
#include "smtp_session_priv.h"

/* smtp_proxy_refuse - end the connection unanswered, saying why */
void
smtp_proxy_refuse(struct session *s, const char *reason)
{
	log_info("id=%s event=proxy_refused client=%s listener=%s reason=\"%s\"", s->idstr,
	    s->addr, s->lconf->name, reason);
	session_close(s);
}

/* smtp_proxy_timeout_cb - no whole header within proxy_timeout */
static void
smtp_proxy_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	if (s->state == S_PROXY)
		smtp_proxy_refuse(s, "no whole PROXY header within proxy_timeout");
}

/* smtp_proxy_start - a new connection on a PROXY listener: trusted, then wait for its header */
void
smtp_proxy_start(struct session *s)
{
	const struct sockaddr *sa = (const struct sockaddr *)&s->fsess.client_sa;
	struct timeval tv = { s->lconf->proxy_timeout, 0 };

	if (!proxy_trusted(sa, s->lconf->proxy_trusted, s->lconf->nproxy_trusted)) {
		smtp_proxy_refuse(s, "sender not in proxy_trusted");
		return;
	}
	s->state = S_PROXY;
	evtimer_del(s->deadline);	/* proxy_timeout instead, and no 421 */
	s->ev = evtimer_new(loop_base(s->loop), smtp_proxy_timeout_cb, s);
	if (s->ev == NULL)
		fatal("evtimer_new failed");
	evtimer_add(s->ev, &tv);
}

/* smtp_proxy_apply - the header's addresses become the session's */
static void
smtp_proxy_apply(struct session *s, const struct proxy_result *r)
{
	str_copy(s->proxy_addr, s->addr, sizeof(s->proxy_addr));
	s->fsess.proxy_client = s->proxy_addr;
	if (r->has_addr) {
		s->fsess.client_sa = r->src;
		if (!sockaddr_text((const struct sockaddr *)&r->src, s->addr, sizeof(s->addr)))
			str_copy(s->addr, "unknown", sizeof(s->addr));
		s->fsess.client_port = sockaddr_port((const struct sockaddr *)&r->src);
		s->fsess.local_sa = r->dst;
		sockaddr_text((const struct sockaddr *)&r->dst, s->local_addr,
		    sizeof(s->local_addr));
		s->fsess.local_port = sockaddr_port((const struct sockaddr *)&r->dst);
	}
	/* logged by session_connected, once the concurrency limits let the client in */
	snprintf(s->connect_extra, sizeof(s->connect_extra),
	    " proxy=%s proxy_version=%d proxy_kind=%s%s", s->proxy_addr, r->version, r->kind,
	    r->has_addr ? "" : " address=kept");
}

/*
 * smtp_proxy_read - client input while the header is due: MORE waits, BAD
 * or a second header refuses, a whole header starts the SMTP session
 */
void
smtp_proxy_read(struct session *s, struct evbuffer *in)
{
	struct proxy_result r, again;
	size_t len = evbuffer_get_length(in);
	const unsigned char *p;
	enum proxy_status st;

	if (len > PROXY_HEADER_MAX)
		len = PROXY_HEADER_MAX;
	p = evbuffer_pullup(in, (ev_ssize_t)len);
	st = proxy_parse(p, len, &r);
	if (st == PROXY_MORE)
		return;
	if (st == PROXY_BAD) {
		smtp_proxy_refuse(s, r.reason);
		return;
	}
	evbuffer_drain(in, r.consumed);
	if ((len = evbuffer_get_length(in)) > 0) {
		if (len > PROXY_HEADER_MAX)
			len = PROXY_HEADER_MAX;
		p = evbuffer_pullup(in, (ev_ssize_t)len);
		if (proxy_parse(p, len, &again) != PROXY_BAD || !again.not_proxy) {
			smtp_proxy_refuse(s, "a second PROXY header");
			return;
		}
	}
	event_free(s->ev);
	s->ev = NULL;
	smtp_proxy_apply(s, &r);
	session_connected(s);
}
