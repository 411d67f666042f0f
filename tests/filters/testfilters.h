/*
 * testfilters.h - filters that exist to test the filter API through whole
 * SMTP sessions: each is configured by its [filter NAME] section, refuses
 * keys it does not know, and logs what it did (event=testfilter).
 */
#ifndef PORTIER_TESTFILTERS_H
#define PORTIER_TESTFILTERS_H

struct filter_ops;

/* test-edit (tf_edit.c): envelope and message edits at end of message */
extern const struct filter_ops tf_edit_ops;

/* tf_api_register - test-async, test-block, test-sign, test-pass (tf_api.c) */
void tf_api_register(void);

/* testfilters_register - register every test filter */
void testfilters_register(void);

#endif
