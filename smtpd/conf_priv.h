/*
 * conf_priv.h - what conf.c and conf_value.c share: the key table entry and
 * the value parsers ("setters") it points to, and the small helpers both
 * use.  Not for other modules: they see struct conf through conf.h.
 */
#ifndef PORTIER_CONF_PRIV_H
#define PORTIER_CONF_PRIV_H

#include <stdbool.h>
#include <stddef.h>

#include "conf.h"

#define CONF_NAME_MAX	64		/* listener, milter... names */

struct conf_key;
/* A setter parses value into field; false and a message saying what to fix. */
typedef bool (*conf_setter)(void *field, const struct conf_key *k, const char *value,
    char **why_r);

struct conf_key {
	const char *name;
	conf_setter set;
	size_t off;			/* of the field in its struct */
	unsigned long long min, max;	/* numbers */
	const char *const *words;	/* enums: names indexed by value */
	const char *hint;		/* appended to range errors */
};

enum conf_host { CONF_HOST_BIND, CONF_HOST_ANY };

bool conf_is_space(int ch);
bool conf_name_ok(const char *s, const char *extra);
void conf_strv_push(char ***v, size_t *n, char *s);
void conf_strv_free(char **v, size_t n);
void conf_split(const char *value, char ***v_r, size_t *n_r);
bool conf_parse_hostport(const char *s, enum conf_host mode, char **host_r, char **port_r,
    char **why_r);
bool conf_set_uint(void *field, const struct conf_key *k, const char *value, char **why_r);
bool conf_set_size(void *field, const struct conf_key *k, const char *value, char **why_r);
bool conf_set_bool(void *field, const struct conf_key *k, const char *value, char **why_r);
bool conf_set_enum(void *field, const struct conf_key *k, const char *value, char **why_r);
bool conf_set_word(void *field, const struct conf_key *k, const char *value, char **why_r);
bool conf_set_optstr(void *field, const struct conf_key *k, const char *value, char **why_r);
bool conf_set_hostname(void *field, const struct conf_key *k, const char *value, char **why_r);
bool conf_set_readable(void *field, const struct conf_key *k, const char *value, char **why_r);
bool conf_set_resolver(void *field, const struct conf_key *k, const char *value, char **why_r);
bool conf_set_metrics(void *field, const struct conf_key *k, const char *value, char **why_r);
bool conf_set_domains(void *field, const struct conf_key *k, const char *value, char **why_r);
bool conf_set_listen(void *field, const struct conf_key *k, const char *value, char **why_r);
bool conf_set_filters(void *field, const struct conf_key *k, const char *value, char **why_r);
bool conf_set_cidrs(void *field, const struct conf_key *k, const char *value, char **why_r);
bool conf_set_nets(void *field, const struct conf_key *k, const char *value, char **why_r);
void conf_relay_clear(struct conf_relay *r);
bool conf_set_relay(void *field, const struct conf_key *k, const char *value, char **why_r);
bool conf_set_bounce(void *field, const struct conf_key *k, const char *value, char **why_r);
bool conf_set_endpoint(void *field, const struct conf_key *k, const char *value, char **why_r);

#endif
