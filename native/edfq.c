/*
 * edfq.c - fixed-capacity EDF ready queue; see edfq.h for the contract.
 *
 * Layout: entries e[0 .. len-1] sorted in DESCENDING (deadline_ns, seq)
 * order, so e[len-1] is the head of the queue (earliest deadline, oldest
 * among equal deadlines) and pop/peek are O(1).  Queue position k (0 = head)
 * is array index len-1-k.
 */
#include "edfq.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t deadline_ns;
    uint64_t id;
    int64_t cost_ns;
    uint64_t seq; /* insertion counter: FIFO tie-break among equal deadlines */
} edfq_entry_t;

struct edfq {
    uint32_t len;
    uint32_t cap;
    uint64_t next_seq;
    edfq_entry_t e[]; /* cap entries */
};

/* ---- saturating int64 arithmetic (no signed overflow, ever) ------------- */

#if defined(__GNUC__) || defined(__clang__)
static inline int64_t sat_add(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

static inline int64_t sat_sub(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_sub_overflow(a, b, &r))
        return b < 0 ? INT64_MAX : INT64_MIN;
    return r;
}
#else /* portable fallback */
static inline int64_t sat_add(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    if (b < 0 && a < INT64_MIN - b)
        return INT64_MIN;
    return a + b;
}

static inline int64_t sat_sub(int64_t a, int64_t b)
{
    if (b < 0 && a > INT64_MAX + b)
        return INT64_MAX;
    if (b > 0 && a < INT64_MIN + b)
        return INT64_MIN;
    return a - b;
}
#endif

/* ---- helpers ------------------------------------------------------------ */

/* Array index of the entry with this id, or -1. */
static ptrdiff_t find_id(const edfq_t *q, uint64_t id)
{
    for (uint32_t i = 0; i < q->len; i++) {
        if (q->e[i].id == id)
            return (ptrdiff_t)i;
    }
    return -1;
}

static void report(const edfq_entry_t *x, int64_t *deadline_ns, uint64_t *id,
                   int64_t *cost_ns)
{
    if (deadline_ns)
        *deadline_ns = x->deadline_ns;
    if (id)
        *id = x->id;
    if (cost_ns)
        *cost_ns = x->cost_ns;
}

/* ---- API ---------------------------------------------------------------- */

edfq_t *edfq_new(uint32_t capacity)
{
    if (capacity == 0)
        return NULL;
#if SIZE_MAX / 64 < UINT32_MAX
    /* Narrow size_t (32-bit targets): the byte count below could overflow. */
    if ((size_t)capacity > (SIZE_MAX - sizeof(edfq_t)) / sizeof(edfq_entry_t))
        return NULL;
#endif
    edfq_t *q = malloc(sizeof(edfq_t) + (size_t)capacity * sizeof(edfq_entry_t));
    if (!q)
        return NULL;
    q->len = 0;
    q->cap = capacity;
    q->next_seq = 0;
    return q;
}

void edfq_free(edfq_t *q)
{
    free(q);
}

int edfq_push(edfq_t *q, int64_t deadline_ns, uint64_t id, int64_t cost_ns)
{
    if (cost_ns < 0)
        return EDFQ_BAD_COST;
    if (find_id(q, id) >= 0)
        return EDFQ_DUPLICATE_ID;
    if (q->len >= q->cap)
        return EDFQ_FULL;

    /* The new entry has the largest seq so far, so in descending
     * (deadline, seq) order it goes before every entry whose deadline is
     * <= deadline_ns: find the first such index (entries before it have
     * strictly later deadlines). */
    uint32_t lo = 0, hi = q->len;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (q->e[mid].deadline_ns > deadline_ns)
            lo = mid + 1;
        else
            hi = mid;
    }
    memmove(&q->e[lo + 1], &q->e[lo],
            (size_t)(q->len - lo) * sizeof(edfq_entry_t));
    q->e[lo].deadline_ns = deadline_ns;
    q->e[lo].id = id;
    q->e[lo].cost_ns = cost_ns;
    q->e[lo].seq = q->next_seq++;
    q->len++;
    return EDFQ_OK;
}

int edfq_pop(edfq_t *q, int64_t *deadline_ns, uint64_t *id, int64_t *cost_ns)
{
    if (q->len == 0)
        return EDFQ_EMPTY;
    q->len--;
    report(&q->e[q->len], deadline_ns, id, cost_ns);
    return EDFQ_OK;
}

int edfq_peek(const edfq_t *q, int64_t *deadline_ns, uint64_t *id,
              int64_t *cost_ns)
{
    if (q->len == 0)
        return EDFQ_EMPTY;
    report(&q->e[q->len - 1], deadline_ns, id, cost_ns);
    return EDFQ_OK;
}

int edfq_remove(edfq_t *q, uint64_t id, int64_t *deadline_ns, int64_t *cost_ns)
{
    ptrdiff_t at = find_id(q, id);
    if (at < 0)
        return EDFQ_NOT_FOUND;
    size_t i = (size_t)at;
    report(&q->e[i], deadline_ns, NULL, cost_ns);
    memmove(&q->e[i], &q->e[i + 1],
            ((size_t)q->len - i - 1) * sizeof(edfq_entry_t));
    q->len--;
    return EDFQ_OK;
}

int edfq_update_cost(edfq_t *q, uint64_t id, int64_t cost_ns)
{
    if (cost_ns < 0)
        return EDFQ_BAD_COST;
    ptrdiff_t at = find_id(q, id);
    if (at < 0)
        return EDFQ_NOT_FOUND;
    q->e[at].cost_ns = cost_ns;
    return EDFQ_OK;
}

int edfq_contains(const edfq_t *q, uint64_t id)
{
    return find_id(q, id) >= 0;
}

int edfq_get(const edfq_t *q, uint32_t index, int64_t *deadline_ns,
             uint64_t *id, int64_t *cost_ns)
{
    if (index >= q->len)
        return EDFQ_NOT_FOUND;
    report(&q->e[q->len - 1 - index], deadline_ns, id, cost_ns);
    return EDFQ_OK;
}

uint32_t edfq_len(const edfq_t *q)
{
    return q->len;
}

uint32_t edfq_capacity(const edfq_t *q)
{
    return q->cap;
}

void edfq_clear(edfq_t *q)
{
    q->len = 0;
}

int64_t edfq_slack(const edfq_t *q, int64_t now_ns)
{
    int64_t best = EDFQ_SLACK_INF;
    int64_t demand = 0; /* S_j: saturating prefix sum of costs, >= 0 */
    /* Queue order = descending array index. */
    for (uint32_t i = q->len; i-- > 0;) {
        const edfq_entry_t *x = &q->e[i];
        demand = sat_add(demand, x->cost_ns);
        int64_t s = sat_sub(sat_sub(x->deadline_ns, now_ns), demand);
        if (s < best)
            best = s;
    }
    return best;
}

const char *edfq_strerror(int code)
{
    switch (code) {
    case EDFQ_OK:
        return "ok";
    case EDFQ_FULL:
        return "deadline queue is full";
    case EDFQ_EMPTY:
        return "deadline queue is empty";
    case EDFQ_DUPLICATE_ID:
        return "task id is already queued";
    case EDFQ_NOT_FOUND:
        return "task id is not queued";
    case EDFQ_BAD_COST:
        return "cost must be >= 0";
    default:
        return "unknown edfq status";
    }
}
