/* test_progress.c: the progress line of the long commands
 * (src/host/train/progress_line.h), written to a memory stream.
 *
 * Off a terminal: plain lines only (no '\r', no escape code), one when the
 * target changes and none for updates of the same target within 30 s, each
 * with "done/total"; a pause (what = NULL) prints nothing. On a terminal:
 * each draw starts "\r\033[K", the bar holds done/total of 30 marks, the
 * estimate is the elapsed time scaled by the units left, a pause clears the
 * line and the next update draws again; ending clears it. Silent with no
 * stream. The bar is pmoe train's (report.c draws it with the same call). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "train/progress_line.h"

static int count_of(const char *text, const char *needle) {
    int n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

static void test_plain(void) {
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    pmoe_progress_line line;
    const pmoe_progress p = pmoe_progress_line_start(&line, out, 0, "bench");
    for (int i = 0; i <= 40; i++) pmoe_progress_report(&p, "pmoe: train steps", i, 100);
    pmoe_progress_report(&p, NULL, 40, 100);
    for (int i = 41; i <= 100; i++) pmoe_progress_report(&p, "cnn: train steps", i, 100);
    pmoe_progress_line_end(&line);
    fclose(out);
    CHECK_MSG(count_of(text, "\n") == 2, "plain lines: %s", text);
    CHECK(strncmp(text, "bench: pmoe: train steps  0/100\n", 32) == 0);
    CHECK_MSG(strstr(text, "bench: cnn: train steps  41/100  ") != NULL, "%s", text);
    CHECK(!strchr(text, '\r') && !strchr(text, '\033'));
    printf("plain: %s", text);
    free(text);
}

static void test_terminal(void) {
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    pmoe_progress_line line;
    const pmoe_progress p = pmoe_progress_line_start(&line, out, 1, "eval");
    line.started -= 100.0; /* 100 s ago: a quarter done leaves 300 s */
    pmoe_progress_report(&p, "eval", 25, 100);
    fflush(out);
    CHECK_MSG(!strcmp(text, "\r\033[Keval [#######.......................] eval  25/100  ETA 5:00"),
              "drawn: '%s'", text + 4);
    pmoe_progress_report(&p, "eval", 26, 100); /* within 0.1 s of the last draw: not drawn */
    fflush(out);
    CHECK(!strstr(text, "26/100"));
    pmoe_progress_report(&p, NULL, 26, 100); /* a pause clears, the next update draws */
    pmoe_progress_report(&p, "eval", 27, 100);
    pmoe_progress_report(&p, "eval", 100, 100); /* the end is always drawn */
    pmoe_progress_line_end(&line);
    fclose(out);
    CHECK_MSG(strstr(text, "ETA 5:00\r\033[K\r\033[Keval [########") && strstr(text, "27/100") &&
                  strstr(text, "[##############################] eval  100/100"),
              "'%s'", text);
    const size_t n = strlen(text);
    CHECK(n > 4 && !strcmp(text + n - 4, "\r\033[K"));
    free(text);

    /* no stream: nothing happens */
    pmoe_progress_line quiet;
    const pmoe_progress q = pmoe_progress_line_start(&quiet, NULL, 1, "eval");
    pmoe_progress_report(&q, "eval", 1, 2);
    pmoe_progress_line_end(&quiet);
    CHECK(quiet.shown == 0);
    pmoe_progress_report(NULL, "nobody", 1, 2);
}

int main(void) {
    test_plain();
    test_terminal();
    return test_finish("test_progress");
}
