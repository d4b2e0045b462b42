/*
 * rules.h - the rules of the job writes that every store backend keeps
 * alike (store.h's transitions): from which statuses each write applies,
 * and from which one the job's charge is refunded in the same
 * transaction; and the arithmetic of the fair-queueing tags. A backend pairs each rule with its own
 * statement; the rules themselves live once, in store.c, so that the backends cannot drift apart.
 */
#ifndef UPRES_STORE_RULES_H
#define UPRES_STORE_RULES_H

#define STORE_BIT(s) (1u << (s))

typedef struct store_rule {
    unsigned allowed;     /* STORE_BIT(status) for each status the write applies to */
    unsigned refund_from; /* statuses from which the charge is refunded with it */
    const char *what;     /* for messages: "cannot <what> it" */
} store_rule_t;

extern const store_rule_t store_rule_start;     /* claimed -> processing */
extern const store_rule_t store_rule_progress;  /* processing: progress */
extern const store_rule_t store_rule_heartbeat; /* claimed or processing: the lease renewed */
extern const store_rule_t store_rule_complete;  /* processing -> completed */
extern const store_rule_t store_rule_fail;      /* queued, claimed or processing -> failed, refunded */
extern const store_rule_t store_rule_cancelled; /* claimed or processing -> cancelled (refunded if claimed) */
extern const store_rule_t store_rule_requeue;   /* claimed or processing -> queued */
extern const store_rule_t store_rule_downloaded; /* completed: the result downloaded */
extern const store_rule_t store_rule_expire;     /* ended -> expired */

/* A job's priority (job_t.priority): strict, higher first; 0 is normal. */
#define STORE_PRIORITY_MIN -10
#define STORE_PRIORITY_MAX 10

/*
 * The fair-queueing tag of a new job (store.h "Order"): max(vtime, last) +
 * cost / weight, where vtime is its priority level's virtual time, last
 * the owner's largest queued tag at that level (vtime when it has none)
 * and cost and weight the job's (each <= 0 taken as 1). Every backend
 * computes tags with this one function.
 */
double store_fair_tag(double vtime, double last, double cost, double weight);

#endif
