/*
 * edfq.h - fixed-capacity earliest-deadline-first (EDF) ready queue.
 *
 * This is the EDF ready queue of the radio tenant.  Every queued task has an
 * absolute deadline (ns), a caller-chosen 64-bit id that is unique within the
 * queue, and a predicted remaining cost (ns of processor time).  Tasks leave
 * the queue in order of (deadline ascending, insertion sequence ascending):
 * tasks with equal deadlines come out in FIFO order.
 *
 * edfq_slack() computes the processor-demand slack of the queued work (cf.
 * EDF processor-demand / demand-bound analysis): if the queued tasks run
 * back-to-back in EDF order from now_ns, the slack is the least amount of
 * time by which any of them finishes before its deadline.  The arbiter uses
 * it to decide whether AI work can be admitted without making a radio task
 * miss its deadline (slack < 0 means some deadline is already unmeetable).
 *
 * Storage and complexity (n = number of queued tasks):
 *   The entries live in one array that is kept sorted in DESCENDING
 *   (deadline, seq) order, so the earliest deadline is always the LAST
 *   element and can be taken off without moving anything.
 *     edfq_new           O(1) (one allocation of capacity entries)
 *     edfq_push          O(n): duplicate-id scan, binary search for the slot,
 *                        memmove of the entries that sort after it
 *     edfq_pop           O(1)
 *     edfq_peek          O(1)
 *     edfq_remove        O(n): id scan + memmove
 *     edfq_update_cost   O(n): id scan (order is unaffected)
 *     edfq_contains      O(n): id scan
 *     edfq_get           O(1)
 *     edfq_slack         O(n): one pass
 *     edfq_len, edfq_capacity, edfq_clear   O(1)
 *
 * Thread safety: none.  An edfq_t must only be used from one thread at a time
 * (the arbiter owns its queue from a single thread); no function locks.
 *
 * Preconditions: every `q` argument must be a live queue returned by
 * edfq_new() (only edfq_free() accepts NULL).  Output pointers may be NULL,
 * in which case that field is simply not reported.  On any error status the
 * queue and all output locations are left unchanged.
 */
#ifndef AIRAN_EDFQ_H
#define AIRAN_EDFQ_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes returned by the int-returning functions. */
enum {
    EDFQ_OK = 0,           /* success                                        */
    EDFQ_FULL = 1,         /* push: the queue holds `capacity` tasks already */
    EDFQ_EMPTY = 2,        /* pop/peek: the queue is empty                   */
    EDFQ_DUPLICATE_ID = 3, /* push: a task with this id is already queued    */
    EDFQ_NOT_FOUND = 4,    /* remove/update_cost: id not queued;
                              get: index >= length                           */
    EDFQ_BAD_COST = 5      /* push/update_cost: cost_ns < 0                  */
};

/* Returned by edfq_slack() for an empty queue (INT64_MAX). */
#define EDFQ_SLACK_INF INT64_MAX

typedef struct edfq edfq_t;

/* New empty queue able to hold `capacity` tasks.  Returns NULL when
 * capacity is 0 or the allocation fails.  Free it with edfq_free(). */
edfq_t *edfq_new(uint32_t capacity);

/* Release a queue.  NULL is accepted and ignored. */
void edfq_free(edfq_t *q);

/* Queue a task.  Errors (checked in this order, queue unchanged on error):
 * EDFQ_BAD_COST if cost_ns < 0, EDFQ_DUPLICATE_ID if `id` is already
 * queued, EDFQ_FULL if the queue holds `capacity` tasks.  O(n). */
int edfq_push(edfq_t *q, int64_t deadline_ns, uint64_t id, int64_t cost_ns);

/* Take the task with the earliest deadline (FIFO among equal deadlines).
 * EDFQ_EMPTY when the queue is empty.  O(1). */
int edfq_pop(edfq_t *q, int64_t *deadline_ns, uint64_t *id, int64_t *cost_ns);

/* Like edfq_pop() but leaves the task queued.  O(1). */
int edfq_peek(const edfq_t *q, int64_t *deadline_ns, uint64_t *id,
              int64_t *cost_ns);

/* Take the task with the given id out of the queue, wherever it is.
 * EDFQ_NOT_FOUND if it is not queued.  O(n). */
int edfq_remove(edfq_t *q, uint64_t id, int64_t *deadline_ns,
                int64_t *cost_ns);

/* Change the predicted remaining cost of a queued task (the arbiter lowers
 * it as the task's slices complete).  The task keeps its place in the
 * queue.  EDFQ_BAD_COST if cost_ns < 0 (checked first), EDFQ_NOT_FOUND if
 * the id is not queued.  O(n). */
int edfq_update_cost(edfq_t *q, uint64_t id, int64_t cost_ns);

/* 1 if a task with this id is queued, else 0.  O(n). */
int edfq_contains(const edfq_t *q, uint64_t id);

/* The task at position `index` in queue order (0 = the one edfq_pop() would
 * return next).  EDFQ_NOT_FOUND if index >= edfq_len(q).  O(1). */
int edfq_get(const edfq_t *q, uint32_t index, int64_t *deadline_ns,
             uint64_t *id, int64_t *cost_ns);

uint32_t edfq_len(const edfq_t *q);
uint32_t edfq_capacity(const edfq_t *q);

/* Drop every queued task.  O(1). */
void edfq_clear(edfq_t *q);

/* Processor-demand slack at time now_ns.  With the queued tasks
 * t_1 .. t_n in queue order (earliest deadline first):
 *
 *     S_0 = 0,   S_j = sat(S_{j-1} + cost_j)
 *     slack   = min over j of  sat( sat(deadline_j - now_ns) - S_j )
 *
 * where sat() clamps a mathematically exact result to
 * [INT64_MIN, INT64_MAX] at every step, so no input can overflow.  When no
 * intermediate value leaves the int64 range (i.e. for any timeline within
 * +-292 years) this is exactly min_j(deadline_j - now_ns - S_j).
 * Returns EDFQ_SLACK_INF (INT64_MAX) for an empty queue.  One O(n) pass. */
int64_t edfq_slack(const edfq_t *q, int64_t now_ns);

/* Static, human-readable description of a status code ("unknown edfq
 * status" for codes outside the enum).  Never NULL. */
const char *edfq_strerror(int code);

#ifdef __cplusplus
}
#endif

#endif /* AIRAN_EDFQ_H */
