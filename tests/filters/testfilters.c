/*
 * testfilters.c - the list of test filters (see testfilters.h).
 */
#include "config.h"

#include "filter.h"
#include "testfilters.h"

/* testfilters_register - register every test filter */
void
testfilters_register(void)
{
	filter_register(&tf_edit_ops);
	tf_api_register();
}
