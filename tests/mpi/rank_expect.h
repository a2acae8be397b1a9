/* rank_expect.h: a failed check in an MPI test, printed with the rank that
 * saw it (the first ten per rank). The including file defines `int rank`
 * and `int failures`; the ranks agree on the count at the end. */
#ifndef PMOE_TESTS_RANK_EXPECT_H
#define PMOE_TESTS_RANK_EXPECT_H

#include <stdio.h>

#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            if (++failures <= 10) {                                                                \
                fprintf(stderr, "FAIL (rank %d) %s:%d: ", rank, __FILE__, __LINE__);               \
                fprintf(stderr, __VA_ARGS__);                                                      \
                fputc('\n', stderr);                                                               \
            }                                                                                      \
        }                                                                                          \
    } while (0)

#endif
