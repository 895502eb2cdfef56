/* The one CHECK of the C unit tests (pace_test.c, table_check.c): counts
 * each check, so a driver can print "ok N", and ends the run at the first
 * that fails, naming its file, line and condition. */
#ifndef RC_TEST_CHECK_H
#define RC_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static unsigned checks;

#define CHECK(cond)                                                              \
    do {                                                                         \
        checks++;                                                                \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #cond);   \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

#endif
