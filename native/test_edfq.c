/*
 * test_edfq.c - C-level test harness for edfq.c.
 *
 * Unit tests of every function and error path, then a randomized
 * differential test against a deliberately naive reference model (unsorted
 * array, linear scans, slack computed with 128-bit arithmetic clamped at
 * every step).  Meant to be run under AddressSanitizer + UBSan and under
 * valgrind (see the Makefile next to it):
 *
 *     ./test_edfq [ops-per-seed [seeds]]     (defaults: 200000 ops, 8 seeds)
 *
 * Exit status 0 when every check passes.
 */
#include "edfq.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__extension__ typedef __int128 i128;

static long failures;

#define CHECK(cond)                                                         \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,          \
                    __LINE__, #cond);                                       \
            if (++failures > 20)                                            \
                exit(1);                                                    \
        }                                                                   \
    } while (0)

/* ---- reference model ------------------------------------------------------ */

typedef struct {
    int64_t d;
    uint64_t id;
    int64_t c;
    uint64_t seq;
} ref_item;

typedef struct {
    ref_item *v; /* insertion order, unsorted */
    uint32_t len, cap;
    uint64_t seq;
} ref_t;

static int ref_less(const ref_item *a, const ref_item *b)
{
    return a->d < b->d || (a->d == b->d && a->seq < b->seq);
}

static long ref_find(const ref_t *r, uint64_t id)
{
    for (uint32_t i = 0; i < r->len; i++)
        if (r->v[i].id == id)
            return (long)i;
    return -1;
}

static int ref_push(ref_t *r, int64_t d, uint64_t id, int64_t c)
{
    if (c < 0)
        return EDFQ_BAD_COST;
    if (ref_find(r, id) >= 0)
        return EDFQ_DUPLICATE_ID;
    if (r->len == r->cap)
        return EDFQ_FULL;
    r->v[r->len++] = (ref_item){d, id, c, r->seq++};
    return EDFQ_OK;
}

static long ref_head(const ref_t *r)
{
    long best = -1;
    for (uint32_t i = 0; i < r->len; i++)
        if (best < 0 || ref_less(&r->v[i], &r->v[best]))
            best = (long)i;
    return best;
}

static void ref_delete(ref_t *r, long i)
{
    r->v[i] = r->v[--r->len]; /* order in the array does not matter */
}

static int cmp_items(const void *a, const void *b)
{
    return ref_less(a, b) ? -1 : ref_less(b, a) ? 1 : 0;
}

static int64_t clamp128(i128 x)
{
    if (x > (i128)INT64_MAX)
        return INT64_MAX;
    if (x < (i128)INT64_MIN)
        return INT64_MIN;
    return (int64_t)x;
}

/* Same definition as edfq_slack(), computed independently. */
static int64_t ref_slack(const ref_t *r, int64_t now, ref_item *scratch)
{
    memcpy(scratch, r->v, r->len * sizeof *scratch);
    qsort(scratch, r->len, sizeof *scratch, cmp_items);
    int64_t best = INT64_MAX, demand = 0;
    for (uint32_t j = 0; j < r->len; j++) {
        demand = clamp128((i128)demand + scratch[j].c);
        int64_t diff = clamp128((i128)scratch[j].d - now);
        int64_t s = clamp128((i128)diff - demand);
        if (s < best)
            best = s;
    }
    return best;
}

/* ---- randomness ------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rnd(void) /* splitmix64 */
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int64_t rnd_i64(void)
{
    static const int64_t edges[] = {INT64_MIN, INT64_MIN + 1, -1, 0, 1,
                                    INT64_MAX - 1, INT64_MAX};
    switch (rnd() % 4) {
    case 0:
        return edges[rnd() % (sizeof edges / sizeof edges[0])];
    case 1: {
        uint64_t u = rnd();
        int64_t x;
        memcpy(&x, &u, sizeof x);
        return x;
    }
    default:
        return (int64_t)(rnd() % 41) - 20; /* small: many equal deadlines */
    }
}

static int64_t rnd_cost(void)
{
    switch (rnd() % 8) {
    case 0:
        return INT64_MAX;
    case 1:
        return (int64_t)(rnd() >> 1);
    case 2:
        return -(int64_t)(rnd() % 3) - 1; /* invalid */
    default:
        return (int64_t)(rnd() % 20);
    }
}

static uint64_t rnd_id(void)
{
    return rnd() % 16 == 0 ? UINT64_MAX - rnd() % 2 : rnd() % 24;
}

/* ---- unit tests ------------------------------------------------------------- */

static void unit_tests(void)
{
    int64_t d, c;
    uint64_t id;

    CHECK(edfq_new(0) == NULL);
    edfq_free(NULL);

    edfq_t *q = edfq_new(3);
    CHECK(q != NULL);
    CHECK(edfq_len(q) == 0 && edfq_capacity(q) == 3);
    CHECK(edfq_slack(q, 0) == EDFQ_SLACK_INF);
    CHECK(edfq_pop(q, &d, &id, &c) == EDFQ_EMPTY);
    CHECK(edfq_peek(q, &d, &id, &c) == EDFQ_EMPTY);
    CHECK(edfq_remove(q, 1, &d, &c) == EDFQ_NOT_FOUND);
    CHECK(edfq_update_cost(q, 1, 5) == EDFQ_NOT_FOUND);
    CHECK(edfq_get(q, 0, &d, &id, &c) == EDFQ_NOT_FOUND);

    CHECK(edfq_push(q, 1000, 1, 300) == EDFQ_OK);
    CHECK(edfq_push(q, 1500, 2, 400) == EDFQ_OK);
    CHECK(edfq_push(q, 1200, 3, 500) == EDFQ_OK);
    /* worked example of docs/deadline-queue.md */
    CHECK(edfq_slack(q, 100) == 200);
    CHECK(edfq_push(q, 1, 4, 1) == EDFQ_FULL);
    CHECK(edfq_push(q, 1, 2, 1) == EDFQ_DUPLICATE_ID);
    CHECK(edfq_push(q, 1, 4, -1) == EDFQ_BAD_COST);
    CHECK(edfq_update_cost(q, 1, -1) == EDFQ_BAD_COST);
    CHECK(edfq_update_cost(q, 1, 100) == EDFQ_OK);
    CHECK(edfq_slack(q, 100) == 400);
    CHECK(edfq_slack(q, 700) == -200);
    CHECK(edfq_contains(q, 3) == 1 && edfq_contains(q, 4) == 0);
    CHECK(edfq_get(q, 1, &d, &id, &c) == EDFQ_OK && d == 1200 && id == 3 &&
          c == 500);
    CHECK(edfq_get(q, 3, NULL, NULL, NULL) == EDFQ_NOT_FOUND);
    CHECK(edfq_peek(q, &d, &id, &c) == EDFQ_OK && d == 1000 && id == 1 &&
          c == 100);
    CHECK(edfq_remove(q, 3, &d, &c) == EDFQ_OK && d == 1200 && c == 500);
    CHECK(edfq_pop(q, &d, &id, &c) == EDFQ_OK && id == 1);
    CHECK(edfq_pop(q, NULL, NULL, NULL) == EDFQ_OK);
    CHECK(edfq_len(q) == 0);
    edfq_free(q);

    /* FIFO among equal deadlines, across interleaved deadlines */
    q = edfq_new(8);
    static const int64_t dl[] = {30, 10, 20, 10, 30, 10};
    for (uint64_t k = 0; k < 6; k++)
        CHECK(edfq_push(q, dl[k], k + 1, 1) == EDFQ_OK);
    static const uint64_t expect[] = {2, 4, 6, 3, 1, 5};
    for (int k = 0; k < 6; k++)
        CHECK(edfq_pop(q, NULL, &id, NULL) == EDFQ_OK && id == expect[k]);
    edfq_clear(q);

    /* saturation corners */
    CHECK(edfq_push(q, INT64_MAX, 1, INT64_MAX) == EDFQ_OK);
    CHECK(edfq_push(q, INT64_MAX, 2, INT64_MAX) == EDFQ_OK);
    CHECK(edfq_slack(q, INT64_MIN) == 0);           /* sat(MAX - MIN) - MAX */
    CHECK(edfq_slack(q, INT64_MAX) == INT64_MIN + 1); /* 0 - MAX */
    edfq_clear(q);
    CHECK(edfq_len(q) == 0 && edfq_slack(q, 0) == EDFQ_SLACK_INF);
    CHECK(edfq_push(q, INT64_MIN, 1, 0) == EDFQ_OK);
    CHECK(edfq_slack(q, INT64_MAX) == INT64_MIN);
    CHECK(edfq_slack(q, INT64_MIN) == 0);
    edfq_free(q);

    /* status strings */
    for (int code = EDFQ_OK; code <= EDFQ_BAD_COST; code++)
        CHECK(edfq_strerror(code) != NULL && strcmp(edfq_strerror(code),
                                                    "unknown edfq status") != 0);
    CHECK(strcmp(edfq_strerror(-1), "unknown edfq status") == 0);
}

/* ---- differential test ------------------------------------------------------- */

static void differential(uint64_t seed, long ops)
{
    rng_state = seed;
    uint32_t cap = (uint32_t)(1 + rnd() % 64);
    edfq_t *q = edfq_new(cap);
    ref_t r = {malloc(cap * sizeof(ref_item)), 0, cap, 0};
    ref_item *scratch = malloc(cap * sizeof(ref_item));
    CHECK(q && r.v && scratch);

    for (long n = 0; n < ops; n++) {
        int64_t d, c, rd, rc_;
        uint64_t id;
        unsigned op = (unsigned)(rnd() % 100);
        if (op < 35) { /* push */
            int64_t dd = rnd_i64(), cc = rnd_cost();
            uint64_t ii = rnd_id();
            CHECK(edfq_push(q, dd, ii, cc) == ref_push(&r, dd, ii, cc));
        } else if (op < 50) { /* pop */
            long h = ref_head(&r);
            int st = edfq_pop(q, &d, &id, &c);
            if (h < 0) {
                CHECK(st == EDFQ_EMPTY);
            } else {
                CHECK(st == EDFQ_OK && d == r.v[h].d && id == r.v[h].id &&
                      c == r.v[h].c);
                ref_delete(&r, h);
            }
        } else if (op < 55) { /* peek */
            long h = ref_head(&r);
            int st = edfq_peek(q, &d, &id, &c);
            CHECK(h < 0 ? st == EDFQ_EMPTY
                        : st == EDFQ_OK && d == r.v[h].d && id == r.v[h].id &&
                              c == r.v[h].c);
        } else if (op < 65) { /* remove */
            uint64_t ii = rnd_id();
            long at = ref_find(&r, ii);
            int st = edfq_remove(q, ii, &d, &c);
            if (at < 0) {
                CHECK(st == EDFQ_NOT_FOUND);
            } else {
                rd = r.v[at].d;
                rc_ = r.v[at].c;
                CHECK(st == EDFQ_OK && d == rd && c == rc_);
                ref_delete(&r, at);
            }
        } else if (op < 75) { /* update_cost */
            uint64_t ii = rnd_id();
            int64_t cc = rnd_cost();
            long at = ref_find(&r, ii);
            int want = cc < 0 ? EDFQ_BAD_COST : at < 0 ? EDFQ_NOT_FOUND : EDFQ_OK;
            CHECK(edfq_update_cost(q, ii, cc) == want);
            if (want == EDFQ_OK)
                r.v[at].c = cc;
        } else if (op < 90) { /* slack */
            int64_t now = rnd_i64();
            CHECK(edfq_slack(q, now) == ref_slack(&r, now, scratch));
        } else if (op < 97) { /* contains */
            uint64_t ii = rnd_id();
            CHECK(edfq_contains(q, ii) == (ref_find(&r, ii) >= 0));
        } else if (op < 99) { /* full comparison via edfq_get */
            memcpy(scratch, r.v, r.len * sizeof *scratch);
            qsort(scratch, r.len, sizeof *scratch, cmp_items);
            for (uint32_t k = 0; k < r.len; k++) {
                CHECK(edfq_get(q, k, &d, &id, &c) == EDFQ_OK &&
                      d == scratch[k].d && id == scratch[k].id &&
                      c == scratch[k].c);
            }
            CHECK(edfq_get(q, r.len, &d, &id, &c) == EDFQ_NOT_FOUND);
        } else { /* clear */
            edfq_clear(q);
            r.len = 0;
        }
        CHECK(edfq_len(q) == r.len);
    }
    free(scratch);
    free(r.v);
    edfq_free(q);
}

int main(int argc, char **argv)
{
    long ops = argc > 1 ? strtol(argv[1], NULL, 10) : 200000;
    long seeds = argc > 2 ? strtol(argv[2], NULL, 10) : 8;

    unit_tests();
    for (long s = 0; s < seeds; s++)
        differential(0x5eed0000u + (uint64_t)s, ops);

    if (failures) {
        fprintf(stderr, "test_edfq: %ld check(s) FAILED\n", failures);
        return 1;
    }
    printf("test_edfq: all checks passed (unit tests + %ld seeds x %ld ops)\n",
           seeds, ops);
    return 0;
}
