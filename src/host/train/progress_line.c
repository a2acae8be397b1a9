/* progress_line.c: see progress_line.h. */
#include "train/progress_line.h"

#include <string.h>

#include "core/phase_timer.h"

/* Off a terminal: a plain line every PLAIN_EVERY seconds (pmoe train's rule). */
enum { PLAIN_EVERY = 30 };

void pmoe_progress_bar(double fraction, char bar[PMOE_PROGRESS_BAR_WIDTH + 1]) {
    if (!(fraction > 0.0)) fraction = 0.0;
    if (fraction > 1.0) fraction = 1.0;
    const int filled = (int)(fraction * PMOE_PROGRESS_BAR_WIDTH);
    for (int i = 0; i < PMOE_PROGRESS_BAR_WIDTH; i++) bar[i] = i < filled ? '#' : '.';
    bar[PMOE_PROGRESS_BAR_WIDTH] = '\0';
}

void pmoe_progress_line_end(pmoe_progress_line *line);

static void update(void *user, const char *what, int64_t done, int64_t total) {
    pmoe_progress_line *p = user;
    if (!p->out) return;
    if (!what) {
        pmoe_progress_line_end(p);
        p->what[0] = '\0'; /* drawn again at the next update */
        return;
    }
    const double now = pmoe_now_seconds();
    const double fraction = total > 0 ? (double)done / (double)total : 0.0;
    const double elapsed = now - p->started;
    const double eta = fraction > 0.0 ? elapsed * (1.0 - fraction) / fraction : 0.0;
    const int changed = strncmp(what, p->what, sizeof p->what - 1) != 0;
    if (!p->is_terminal) {
        if (!changed && now - p->last_line < PLAIN_EVERY) return;
        p->last_line = now;
        snprintf(p->what, sizeof p->what, "%s", what);
        fprintf(p->out, "%s: %s  %lld/%lld", p->task, what, (long long)done, (long long)total);
        if (done > 0) fprintf(p->out, "  %.0f s, about %.0f s left", elapsed, eta);
        fputc('\n', p->out);
        fflush(p->out);
        return;
    }
    if (!changed && now - p->last_draw < 0.1 && done != total) return;
    p->last_draw = now;
    snprintf(p->what, sizeof p->what, "%s", what);
    char bar[PMOE_PROGRESS_BAR_WIDTH + 1];
    pmoe_progress_bar(fraction, bar);
    fprintf(p->out, "\r\033[K%s [%s] %s  %lld/%lld", p->task, bar, what, (long long)done,
            (long long)total);
    if (done > 0) fprintf(p->out, "  ETA %d:%02d", (int)eta / 60, (int)eta % 60);
    fflush(p->out);
    p->shown = 1;
}

pmoe_progress pmoe_progress_line_start(pmoe_progress_line *line, FILE *out, int is_terminal,
                                       const char *task) {
    memset(line, 0, sizeof *line);
    line->out = out;
    line->is_terminal = is_terminal;
    snprintf(line->task, sizeof line->task, "%s", task);
    line->started = pmoe_now_seconds();
    line->last_line = line->started;
    pmoe_progress p = {line, update};
    return p;
}

void pmoe_progress_line_end(pmoe_progress_line *line) {
    if (line->out && line->shown) {
        fprintf(line->out, "\r\033[K");
        fflush(line->out);
    }
    line->shown = 0;
}
