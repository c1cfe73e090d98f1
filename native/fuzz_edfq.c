/*
 * fuzz_edfq.c - fuzz target for the EDF deadline queue (edfq.c).
 *
 * A libFuzzer entry point, LLVMFuzzerTestOneInput(), that reads its input
 * bytes as a program of queue operations, runs it against edfq.c and, step
 * by step, against a deliberately simple reference model kept inside this
 * file (an unsorted array, linear scans, slack in 128-bit arithmetic clamped
 * at every step, as edfq.h defines it).  Any disagreement - a status code,
 * an entry, the order, the slack, an output written on an error, the length -
 * is reported on stderr and the process aborts, which libFuzzer (or
 * fuzz_driver.c when there is no clang) records as a crash with the input
 * that caused it.
 *
 * Build and run (see native/Makefile):
 *     make -C native fuzz FUZZ_SECONDS=60
 *
 * Input format (every read past the end yields 0 and ends the program after
 * the current operation):
 *     byte 0            capacity = 1 + b % 64
 *     then, per step:   an opcode byte, then the operands the opcode needs.
 * A 64-bit operand starts with a selector byte s:
 *     s % 4 == 0   one of the int64 edge values (INT64_MIN, -1, 0, INT64_MAX, ...)
 *     s % 4 == 1   a small value (s >> 2) - 32: many equal deadlines (FIFO ties)
 *     s % 4 == 2   the next 8 bytes, little-endian
 *     s % 4 == 3   the previous 64-bit operand plus a small delta
 * A task id operand is a small id (0..15, so duplicates and hits are common)
 * when its selector byte is odd, else a 64-bit operand as above.
 */
#include "edfq.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

__extension__ typedef __int128 i128;

#define MAX_CAPACITY 64u
#define SENTINEL_I64 ((int64_t)0x5A5A5A5A5A5A5A5All)
#define SENTINEL_U64 0xA5A5A5A5A5A5A5A5ull

/* ---- failure ---------------------------------------------------------------- */

static void fail(const char *what, int line)
{
    fprintf(stderr, "fuzz_edfq.c:%d: invariant violated: %s\n", line, what);
    abort();
}

#define REQUIRE(cond)                                                       \
    do {                                                                    \
        if (!(cond))                                                        \
            fail(#cond, __LINE__);                                          \
    } while (0)

/* ---- input reader ----------------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t left;
    int exhausted;
    int64_t last; /* previous 64-bit operand (selector 3) */
} reader_t;

static uint8_t next_byte(reader_t *r)
{
    if (r->left == 0) {
        r->exhausted = 1;
        return 0;
    }
    r->left--;
    return *r->p++;
}

static int64_t next_i64(reader_t *r)
{
    static const int64_t edges[] = {
        INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX - 1, INT64_MAX,
        INT64_MAX / 2, INT64_MIN / 2, (int64_t)1 << 62, -((int64_t)1 << 62),
        (int64_t)UINT32_MAX, 1000000000, -1000000000};
    uint8_t s = next_byte(r);
    int64_t v;
    switch (s % 4u) {
    case 0:
        v = edges[(size_t)(s >> 2) % (sizeof edges / sizeof edges[0])];
        break;
    case 1:
        v = (int64_t)(s >> 2) - 32;
        break;
    case 2: {
        uint64_t u = 0;
        for (unsigned k = 0; k < 8; k++)
            u |= (uint64_t)next_byte(r) << (8u * k);
        memcpy(&v, &u, sizeof v);
        break;
    }
    default: { /* near the previous operand, without signed overflow */
        int64_t delta = (int64_t)(s >> 2) - 32;
        if ((delta > 0 && r->last > INT64_MAX - delta) ||
            (delta < 0 && r->last < INT64_MIN - delta))
            v = r->last;
        else
            v = r->last + delta;
        break;
    }
    }
    r->last = v;
    return v;
}

static uint64_t next_id(reader_t *r)
{
    uint8_t s = next_byte(r);
    if (s & 1u)
        return (uint64_t)(s >> 1) % 16u;
    int64_t v = next_i64(r);
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

/* ---- reference model ------------------------------------------------------- */

typedef struct {
    int64_t d;
    uint64_t id;
    int64_t c;
    uint64_t seq;
} item_t;

typedef struct {
    item_t v[MAX_CAPACITY];
    uint32_t len, cap;
    uint64_t seq;
} model_t;

static int item_less(const item_t *a, const item_t *b)
{
    return a->d < b->d || (a->d == b->d && a->seq < b->seq);
}

static long model_find(const model_t *m, uint64_t id)
{
    for (uint32_t i = 0; i < m->len; i++)
        if (m->v[i].id == id)
            return (long)i;
    return -1;
}

static long model_head(const model_t *m)
{
    long best = -1;
    for (uint32_t i = 0; i < m->len; i++)
        if (best < 0 || item_less(&m->v[i], &m->v[best]))
            best = (long)i;
    return best;
}

static void model_delete(model_t *m, long i)
{
    m->v[i] = m->v[--m->len];
}

/* The model's entries in queue order (insertion sort: n <= 64). */
static void model_sorted(const model_t *m, item_t *out)
{
    for (uint32_t i = 0; i < m->len; i++) {
        item_t x = m->v[i];
        uint32_t j = i;
        while (j > 0 && item_less(&x, &out[j - 1])) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = x;
    }
}

static int64_t clamp(i128 x)
{
    if (x > (i128)INT64_MAX)
        return INT64_MAX;
    if (x < (i128)INT64_MIN)
        return INT64_MIN;
    return (int64_t)x;
}

/* edfq.h's definition: S_j = sat(S_{j-1} + c_j),
 * slack = min_j sat(sat(d_j - now) - S_j); INT64_MAX when empty. */
static int64_t model_slack(const model_t *m, int64_t now)
{
    item_t sorted[MAX_CAPACITY];
    model_sorted(m, sorted);
    int64_t best = INT64_MAX, demand = 0;
    for (uint32_t j = 0; j < m->len; j++) {
        demand = clamp((i128)demand + sorted[j].c);
        int64_t s = clamp((i128)clamp((i128)sorted[j].d - now) - demand);
        if (s < best)
            best = s;
    }
    return best;
}

/* ---- checks ------------------------------------------------------------------ */

/* Every entry, in order, through edfq_get(); and one past the end. */
static void check_all(const edfq_t *q, const model_t *m)
{
    item_t sorted[MAX_CAPACITY];
    model_sorted(m, sorted);
    REQUIRE(edfq_len(q) == m->len);
    REQUIRE(edfq_capacity(q) == m->cap);
    for (uint32_t k = 0; k < m->len; k++) {
        int64_t d = SENTINEL_I64, c = SENTINEL_I64;
        uint64_t id = SENTINEL_U64;
        REQUIRE(edfq_get(q, k, &d, &id, &c) == EDFQ_OK);
        REQUIRE(d == sorted[k].d && id == sorted[k].id && c == sorted[k].c);
        REQUIRE(edfq_contains(q, sorted[k].id) == 1);
    }
    int64_t d = SENTINEL_I64, c = SENTINEL_I64;
    uint64_t id = SENTINEL_U64;
    REQUIRE(edfq_get(q, m->len, &d, &id, &c) == EDFQ_NOT_FOUND);
    REQUIRE(d == SENTINEL_I64 && id == SENTINEL_U64 && c == SENTINEL_I64);
}

static void check_head(const model_t *m, int st, int64_t d, uint64_t id,
                       int64_t c, long h)
{
    if (h < 0) {
        REQUIRE(st == EDFQ_EMPTY);
        REQUIRE(d == SENTINEL_I64 && id == SENTINEL_U64 && c == SENTINEL_I64);
    } else {
        REQUIRE(st == EDFQ_OK);
        REQUIRE(d == m->v[h].d && id == m->v[h].id && c == m->v[h].c);
    }
}

/* ---- the target ---------------------------------------------------------------- */

enum {
    OP_PUSH,
    OP_PUSH_QUEUED_ID,
    OP_POP,
    OP_PEEK,
    OP_REMOVE,
    OP_REMOVE_QUEUED,
    OP_UPDATE_COST,
    OP_CONTAINS,
    OP_GET,
    OP_SLACK,
    OP_STRERROR,
    OP_NULL_OUTPUTS,
    OP_CLEAR,
    OP_COUNT
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reader_t r = {data, size, 0, 0};
    static model_t m; /* 2 KiB: static keeps it off the stack */
    m.cap = 1u + (uint32_t)next_byte(&r) % MAX_CAPACITY;
    m.len = 0;
    m.seq = 0;

    REQUIRE(edfq_new(0) == NULL);
    edfq_t *q = edfq_new(m.cap);
    REQUIRE(q != NULL);
    REQUIRE(edfq_slack(q, 0) == EDFQ_SLACK_INF);

    while (!r.exhausted) {
        uint8_t op = next_byte(&r);
        if (r.exhausted)
            break;
        int64_t d = SENTINEL_I64, c = SENTINEL_I64;
        uint64_t id = SENTINEL_U64;
        switch (op % OP_COUNT) {
        case OP_PUSH:
        case OP_PUSH_QUEUED_ID: {
            int64_t dd = next_i64(&r);
            uint64_t ii = next_id(&r);
            int64_t cc = next_i64(&r);
            if (op % OP_COUNT == OP_PUSH_QUEUED_ID && m.len > 0)
                ii = m.v[next_byte(&r) % m.len].id; /* a known duplicate */
            /* edfq.h: BAD_COST, then DUPLICATE_ID, then FULL */
            int want = cc < 0                     ? EDFQ_BAD_COST
                       : model_find(&m, ii) >= 0  ? EDFQ_DUPLICATE_ID
                       : m.len == m.cap           ? EDFQ_FULL
                                                  : EDFQ_OK;
            REQUIRE(edfq_push(q, dd, ii, cc) == want);
            if (want == EDFQ_OK)
                m.v[m.len++] = (item_t){dd, ii, cc, m.seq++};
            break;
        }
        case OP_POP: {
            long h = model_head(&m);
            int st = edfq_pop(q, &d, &id, &c);
            check_head(&m, st, d, id, c, h);
            if (h >= 0)
                model_delete(&m, h);
            break;
        }
        case OP_PEEK: {
            long h = model_head(&m);
            int st = edfq_peek(q, &d, &id, &c);
            check_head(&m, st, d, id, c, h);
            break;
        }
        case OP_REMOVE:
        case OP_REMOVE_QUEUED: {
            uint64_t ii = next_id(&r);
            if (op % OP_COUNT == OP_REMOVE_QUEUED && m.len > 0)
                ii = m.v[next_byte(&r) % m.len].id;
            long at = model_find(&m, ii);
            int st = edfq_remove(q, ii, &d, &c);
            if (at < 0) {
                REQUIRE(st == EDFQ_NOT_FOUND);
                REQUIRE(d == SENTINEL_I64 && c == SENTINEL_I64);
            } else {
                REQUIRE(st == EDFQ_OK && d == m.v[at].d && c == m.v[at].c);
                model_delete(&m, at);
            }
            break;
        }
        case OP_UPDATE_COST: {
            uint64_t ii = next_id(&r);
            int64_t cc = next_i64(&r);
            long at = model_find(&m, ii);
            int want = cc < 0 ? EDFQ_BAD_COST : at < 0 ? EDFQ_NOT_FOUND : EDFQ_OK;
            REQUIRE(edfq_update_cost(q, ii, cc) == want);
            if (want == EDFQ_OK)
                m.v[at].c = cc;
            break;
        }
        case OP_CONTAINS: {
            uint64_t ii = next_id(&r);
            REQUIRE(edfq_contains(q, ii) == (model_find(&m, ii) >= 0));
            break;
        }
        case OP_GET: {
            uint32_t index = next_byte(&r);
            item_t sorted[MAX_CAPACITY];
            model_sorted(&m, sorted);
            int st = edfq_get(q, index, &d, &id, &c);
            if (index >= m.len) {
                REQUIRE(st == EDFQ_NOT_FOUND);
                REQUIRE(d == SENTINEL_I64 && id == SENTINEL_U64 && c == SENTINEL_I64);
            } else {
                REQUIRE(st == EDFQ_OK && d == sorted[index].d &&
                        id == sorted[index].id && c == sorted[index].c);
            }
            break;
        }
        case OP_SLACK: {
            int64_t now = next_i64(&r);
            REQUIRE(edfq_slack(q, now) == model_slack(&m, now));
            break;
        }
        case OP_STRERROR: {
            int code = (int)(int8_t)next_byte(&r);
            const char *text = edfq_strerror(code);
            REQUIRE(text != NULL && text[0] != '\0');
            REQUIRE((strcmp(text, "unknown edfq status") == 0) ==
                    (code < EDFQ_OK || code > EDFQ_BAD_COST));
            break;
        }
        case OP_NULL_OUTPUTS: { /* every output pointer may be NULL */
            long h = model_head(&m);
            REQUIRE(edfq_peek(q, NULL, NULL, NULL) == (h < 0 ? EDFQ_EMPTY : EDFQ_OK));
            REQUIRE(edfq_get(q, 0, NULL, NULL, NULL) ==
                    (h < 0 ? EDFQ_NOT_FOUND : EDFQ_OK));
            if (h >= 0 && next_byte(&r) % 2u) {
                uint64_t ii = m.v[h].id;
                REQUIRE(edfq_remove(q, ii, NULL, NULL) == EDFQ_OK);
                model_delete(&m, h);
            }
            break;
        }
        case OP_CLEAR:
            if (next_byte(&r) % 4u == 0) { /* rarer than the others */
                edfq_clear(q);
                m.len = 0;
            }
            break;
        default:
            break;
        }
        REQUIRE(edfq_len(q) == m.len);
        check_all(q, &m);
    }
    /* drain in order: the queue hands out exactly the model's sorted entries */
    item_t sorted[MAX_CAPACITY];
    model_sorted(&m, sorted);
    for (uint32_t k = 0; k < m.len; k++) {
        int64_t d = 0, c = 0;
        uint64_t id = 0;
        REQUIRE(edfq_pop(q, &d, &id, &c) == EDFQ_OK);
        REQUIRE(d == sorted[k].d && id == sorted[k].id && c == sorted[k].c);
    }
    REQUIRE(edfq_len(q) == 0 && edfq_slack(q, 0) == EDFQ_SLACK_INF);
    edfq_free(q);
    return 0;
}
