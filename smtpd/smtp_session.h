/*
 * smtp_session.h - one SMTP session: the RFC 5321 state machine between a
 * client socket, the listener's filter chain and the relay.
 *
 * A session belongs to its loop; it frees itself (at the end of a loop turn,
 * never inside one of its own callbacks) when the client leaves, on error,
 * or after session_shutdown.
 */
#ifndef PORTIER_SMTP_SESSION_H
#define PORTIER_SMTP_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <event2/util.h>

struct loop;
struct snapshot;
struct session;
struct sendbatch;

struct bufferevent;

/* session_start - take over a client connection (bev, freed by the session) on listener li. */
void session_start(struct loop *loop, struct snapshot *snap, size_t li, struct bufferevent *bev,
    const struct sockaddr *sa, socklen_t salen);
/* session_shutdown_idle - drain starts: 421 to a client between transactions. */
void session_shutdown_idle(struct session *s);
/* session_shutdown - drain deadline: 421 and close; a session waiting on the backend only if force. */
void session_shutdown(struct session *s, bool force);
/* session_flush - send the replies collected so far (the loop calls it at a turn's end). */
void session_flush(struct session *s);
/* session_send - write them if the socket is plain and idle, through sb (NULL: now); the rest stays */
void session_send(struct session *s, struct sendbatch *sb);
/* session_queue - after the turn's batch: what session_send left goes to the bufferevent */
void session_queue(struct session *s);

#endif
