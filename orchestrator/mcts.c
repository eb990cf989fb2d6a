/*
 * mcts: the search engine declared in mcts.h.
 *
 * The tree is two parallel arrays indexed by node id: nodes holding
 * everything selection reads (visits, value sum, iterations in flight,
 * first child and child count, state, flags, prior and maximum) and links
 * used off the selection path (parent, next sibling), plus a separately
 * allocated payload and, only where needed, a node's last child and pending
 * iteration. Selection records its path, which back-up walks instead of the
 * links. One iteration selects a node from the root by UCT or PUCT (or asks
 * the caller's select callback), puts a virtual loss on the path (when
 * several may be in flight), and queues work: an expansion, an evaluation,
 * or nothing when it reached a terminal node whose value is known (that
 * value is backed up again at once). Work runs from one trampoline, pump():
 * callbacks that answer inside the call only queue more work or finish an
 * iteration, so synchronous answers never recurse, and late answers from
 * the event loop re-enter pump() from the top. With a loop the engine also
 * hands the loop back every few thousand steps, and reports the end through
 * a zero-delay timer so that done() never runs inside an answer. A node is
 * complete when nothing below it can change any more (terminal and
 * evaluated, or fully expanded with complete children); a complete root
 * ends the search. Persistence (tables of the store module "mcts") is at
 * the end of the file. Depends on alloc, error, loop, store and SQLite.
 */
#define _GNU_SOURCE /* mremap */
#include "mcts.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "alloc.h"
#include "error.h"
#include "loop.h"
#include "store.h"

enum {
    F_EVALUATED = 1 << 0, /* an evaluation (or mcts_backup) gave it a value */
    F_EXPANDED = 1 << 1,  /* an expansion added children */
    F_FULL = 1 << 2,      /* an expansion added nothing more (widening) */
    F_COMPLETE = 1 << 3,  /* nothing below can change any more */
    F_PENDING = 1 << 4,   /* a callback for it is outstanding */
    F_EXPANDING = 1 << 5, /* ... and it is an expansion */
    F_CONTIG = 1 << 6,    /* its children have the ids first_child to + nchildren - 1 */
};
#define F_SAVED (F_EVALUATED | F_EXPANDED | F_FULL | F_COMPLETE)

/* 32 bytes, what selection reads to descend through a node and score its
 * children: children added by one expansion have consecutive ids, so four
 * siblings take two cache lines (the array is shifted so that the root's
 * children, ids 1 to 4, start a 128-byte block), and a child's own first
 * child and child count are on hand to prefetch the next level. Payloads
 * live in a table of their own. */
struct node {
    double sum;          /* sum of backed-up values */
    uint32_t visits;     /* backed-up values */
    uint32_t inflight;   /* iterations in flight through the node */
    mcts_id first_child; /* MCTS_NONE without children */
    float prior;         /* as given by the caller */
    float max;           /* best backed-up value (0 unvisited) */
    uint16_t nchildren;  /* at most MAX_CHILDREN */
    uint8_t state;       /* MCTS_EXPANDABLE or MCTS_TERMINAL */
    uint8_t flags;       /* F_* */
};

/* 8 bytes, in a second array parallel to the nodes: the rest of the
 * structure, read when adding children, backing up and walking the tree.
 * Two more arrays of cap entries exist only in searches that need them:
 * the last child of each node whose children are not contiguous (to append
 * in O(1); widening and concurrent expansions make such nodes), and the
 * in-flight iteration of each pending node (with max_inflight > 1). */
struct link {
    mcts_id parent;       /* MCTS_NONE for the root */
    mcts_id next_sibling; /* children in the order they were added */
};

_Static_assert(sizeof(struct node) == 32, "four nodes must fill two cache lines");

#define MAX_CHILDREN UINT16_MAX
#define ARRAY_SHIFT  3
#define ARRAY_ALIGN  64
/* Children of a node whose own children selection prefetches (wider nodes
 * are not prefetched for: that would load too much to pay off). */
#define PREFETCH_CHILDREN 8

struct payload {
    char *data; /* NUL-terminated copy */
    uint32_t len;
};

enum task_kind { TASK_EXPAND, TASK_EVALUATE };

struct task {
    mcts_id node;
    int kind;
};

/* One iteration in flight: the node its selection reached (virtual loss is
 * on the path from there to the root) and how many answers it waits for. */
struct slot {
    mcts_id leaf;
    mcts_id mark; /* the leaf's last child before an expansion */
    uint32_t pending;
    uint32_t next_free;
};

struct mcts {
    struct mcts_options o;
    struct mcts_callbacks cb;
    void *ud;

    struct node *nodes;
    struct link *links; /* both: [id] is ARRAY_SHIFT entries after the allocation's start */
    mcts_id *last;      /* NULL or [id]: last child while !F_CONTIG (see struct link) */
    uint32_t *slot_of;  /* NULL or [id]: iteration while F_PENDING, max_inflight > 1 */
    size_t n, cap;
    struct payload *payloads; /* NULL until a payload is set; then cap entries */

    uint64_t rng;
    uint64_t iterations; /* finished */
    uint64_t tokens;

    struct task *queue; /* ring buffer, qcap a power of two */
    size_t qhead, qlen, qcap;

    struct slot *slots;
    uint32_t nslots, free_slot, busy;
    uint32_t last_slot; /* the one in flight when max_inflight is 1 */

    /* The nodes the last selection went through, from where it started
     * (the root or what the select callback chose) to its leaf: backing up
     * takes a node's parent from here rather than from the links, which
     * selection does not read. */
    mcts_id *path;
    size_t path_len, path_cap;

    struct loop *loop;
    struct loop_timer *timer; /* continuation or done() report */
    bool running, pumping, cancelled, finishing;
    uint64_t deadline; /* monotonic ms, 0: none */
    unsigned clock_skip;
    enum mcts_stop stop, last_stop;
    char *error;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* splitmix64: small, fast, and good enough to break ties. */
static uint64_t rng_next(struct mcts *t)
{
    uint64_t z = (t->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* 1 / sqrt(n) for small n, filled once: UCT needs it for every child. */
#define RSQRT_TABLE 1024
static double rsqrt_table[RSQRT_TABLE];

static inline double rsqrt(uint64_t n)
{
    return n < RSQRT_TABLE ? rsqrt_table[n] : 1.0 / sqrt((double)n);
}

/* sqrt(log(n)) likewise, once per node on the path (UCT). */
static double sqrt_log_table[RSQRT_TABLE];

static inline double sqrt_log(uint64_t n)
{
    return n < RSQRT_TABLE ? sqrt_log_table[n] : sqrt(log((double)n));
}

void mcts_options_default(struct mcts_options *o)
{
    memset(o, 0, sizeof *o);
    o->policy = MCTS_UCT;
    o->c = 1.414;
    o->widen_k = 0;
    o->widen_alpha = 0.5;
    o->backup = MCTS_BACKUP_MEAN;
    o->virtual_loss = 1;
    o->max_inflight = 1;
    o->evaluate_children = true;
    o->seed = 0;
}

static int check_options(const struct mcts_options *o)
{
    if (o->policy != MCTS_UCT && o->policy != MCTS_PUCT)
        return error_setc(TH_EUSAGE, "unknown mcts policy %d", (int)o->policy);
    if (o->backup != MCTS_BACKUP_MEAN && o->backup != MCTS_BACKUP_MAX)
        return error_setc(TH_EUSAGE, "unknown mcts back-up %d", (int)o->backup);
    if (!(o->c >= 0) || !isfinite(o->c))
        return error_setc(TH_EUSAGE, "mcts exploration constant must be a number >= 0, got %g",
                          o->c);
    if (!(o->widen_k >= 0) || !isfinite(o->widen_k))
        return error_setc(TH_EUSAGE, "mcts widening k must be >= 0 (0 disables it), got %g",
                          o->widen_k);
    if (o->widen_k > 0 && !(o->widen_alpha > 0 && o->widen_alpha <= 1))
        return error_setc(TH_EUSAGE, "mcts widening alpha must be in (0, 1], got %g",
                          o->widen_alpha);
    if (!(o->virtual_loss >= 0) || !isfinite(o->virtual_loss))
        return error_setc(TH_EUSAGE, "mcts virtual loss must be >= 0, got %g", o->virtual_loss);
    if (o->max_inflight < 1 || o->max_inflight > 1 << 20)
        return error_setc(TH_EUSAGE, "mcts max_inflight must be from 1 to %d, got %d", 1 << 20,
                          o->max_inflight);
    return 0;
}

/* The node and stats arrays: cache-line aligned, and from MAP_BYTES on
 * mapped directly, grown by remapping (no copy) and backed by huge pages
 * where the kernel allows: selection reads them at random, and with small
 * pages nearly every read of a large tree would miss the TLB. */
#define MAP_BYTES ((size_t)8 << 20)
#define HUGE_PAGE ((size_t)2 << 20)

static size_t array_size(size_t bytes)
{
    size_t align = bytes >= MAP_BYTES ? HUGE_PAGE : ARRAY_ALIGN;
    return (bytes + align - 1) / align * align;
}

/* An array of old_bytes (NULL: none) grown to bytes, keeping its first
 * used bytes. */
static void *array_grow(void *old, size_t old_bytes, size_t used, size_t bytes)
{
    void *p;
    if (bytes < MAP_BYTES) {
        p = aligned_alloc(ARRAY_ALIGN, array_size(bytes));
        if (!p)
            alloc_fail(array_size(bytes));
    } else if (old && old_bytes >= MAP_BYTES) {
        p = mremap(old, array_size(old_bytes), array_size(bytes), MREMAP_MAYMOVE);
        if (p == MAP_FAILED)
            alloc_fail(array_size(bytes));
        return p;
    } else {
        p = mmap(NULL, array_size(bytes), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
                 0);
        if (p == MAP_FAILED)
            alloc_fail(array_size(bytes));
#ifdef MADV_HUGEPAGE
        madvise(p, array_size(bytes), MADV_HUGEPAGE);
#endif
    }
    if (old) {
        memcpy(p, old, used);
        free(old);
    }
    return p;
}

static void array_free(void *p, size_t bytes)
{
    if (p && bytes >= MAP_BYTES)
        munmap(p, array_size(bytes));
    else
        free(p);
}

/* The last child of n; the links keep it only once the children are not
 * contiguous, which spares selection's leaves a write to their links. */
static inline mcts_id last_child(const struct mcts *t, mcts_id n)
{
    const struct node *x = &t->nodes[n];
    if (!x->nchildren)
        return MCTS_NONE;
    return x->flags & F_CONTIG ? x->first_child + x->nchildren - 1 : t->last[n];
}

static mcts_id node_add(struct mcts *t, mcts_id parent, double prior)
{
    if (t->n == t->cap) {
        size_t old = t->cap;
        t->cap = t->cap ? t->cap * 2 : 64;
        /* both shifted by ARRAY_SHIFT entries (see struct node) */
        size_t was = old ? old + ARRAY_SHIFT : 0, now = t->cap + ARRAY_SHIFT;
        size_t used = t->n ? t->n + ARRAY_SHIFT : 0;
        struct node *nd = t->nodes ? t->nodes - ARRAY_SHIFT : NULL;
        nd = array_grow(nd, was * sizeof *nd, used * sizeof *nd, now * sizeof *nd);
        t->nodes = nd + ARRAY_SHIFT;
        struct link *ln = t->links ? t->links - ARRAY_SHIFT : NULL;
        ln = array_grow(ln, was * sizeof *ln, used * sizeof *ln, now * sizeof *ln);
        t->links = ln + ARRAY_SHIFT;
        if (t->last)
            t->last = xreallocarray(t->last, t->cap, sizeof *t->last);
        if (t->slot_of)
            t->slot_of = xreallocarray(t->slot_of, t->cap, sizeof *t->slot_of);
        if (t->payloads) {
            t->payloads = xreallocarray(t->payloads, t->cap, sizeof *t->payloads);
            memset(t->payloads + old, 0, (t->cap - old) * sizeof *t->payloads);
        }
    }
    mcts_id id = (mcts_id)t->n++;
    t->nodes[id] =
        (struct node){.first_child = MCTS_NONE, .prior = (float)prior, .state = MCTS_EXPANDABLE};
    t->links[id] = (struct link){parent, MCTS_NONE};
    if (parent != MCTS_NONE) {
        struct node *p = &t->nodes[parent];
        if (!p->nchildren) {
            p->first_child = id;
            p->flags |= F_CONTIG;
        } else {
            t->links[last_child(t, parent)].next_sibling = id;
            if (p->flags & F_CONTIG && id != p->first_child + p->nchildren)
                p->flags &= (uint8_t)~F_CONTIG;
            if (!(p->flags & F_CONTIG)) {
                if (!t->last)
                    t->last = xreallocarray(NULL, t->cap, sizeof *t->last);
                t->last[parent] = id;
            }
        }
        p->nchildren++;
    }
    return id;
}

static void tree_clear(struct mcts *t)
{
    if (t->payloads)
        for (size_t i = 0; i < t->n; i++) {
            free(t->payloads[i].data);
            t->payloads[i] = (struct payload){NULL, 0};
        }
    t->n = 0;
    t->path_len = 0;
}

int mcts_new(struct mcts **out, const struct mcts_options *o, const struct mcts_callbacks *cb,
             void *ud)
{
    *out = NULL;
    struct mcts_options def;
    if (!o) {
        mcts_options_default(&def);
        o = &def;
    }
    int rc = check_options(o);
    if (rc < 0)
        return rc;
    if (!cb || !cb->expand || !cb->evaluate)
        return error_setc(TH_EUSAGE, "an mcts search needs expand and evaluate callbacks");
    if (rsqrt_table[1] == 0)
        for (unsigned i = 1; i < RSQRT_TABLE; i++) {
            rsqrt_table[i] = 1.0 / sqrt((double)i);
            sqrt_log_table[i] = sqrt(log((double)i));
        }
    struct mcts *t = xcalloc(1, sizeof *t);
    t->o = *o;
    t->cb = *cb;
    t->ud = ud;
    t->rng = o->seed;
    t->free_slot = UINT32_MAX;
    node_add(t, MCTS_NONE, 1.0);
    *out = t;
    return 0;
}

void mcts_free(struct mcts *t)
{
    if (!t)
        return;
    if (t->timer)
        loop_timer_cancel(t->timer);
    tree_clear(t);
    if (t->nodes) {
        array_free(t->nodes - ARRAY_SHIFT, (t->cap + ARRAY_SHIFT) * sizeof *t->nodes);
        array_free(t->links - ARRAY_SHIFT, (t->cap + ARRAY_SHIFT) * sizeof *t->links);
        free(t->last);
        free(t->slot_of);
    }
    free(t->payloads);
    free(t->queue);
    free(t->slots);
    free(t->path);
    free(t->error);
    free(t);
}

/* ---- statistics and policy ---------------------------------------------- */

static inline double node_q(const struct mcts *t, mcts_id id)
{
    if (t->o.backup == MCTS_BACKUP_MAX)
        return t->nodes[id].max;
    const struct node *x = &t->nodes[id];
    return x->visits ? x->sum / x->visits : 0;
}

/* Q with the virtual loss of the iterations in flight through id. */
static inline double node_q_vl(const struct mcts *t, mcts_id id)
{
    double q = node_q(t, id);
    uint32_t inflight = t->nodes[id].inflight;
    if (!inflight || t->o.virtual_loss <= 0)
        return q;
    double n = t->nodes[id].visits, i = inflight;
    return (n * q - t->o.virtual_loss * i) / (n + i);
}

unsigned mcts_child_limit(const struct mcts *t, mcts_id n)
{
    if (n >= t->n)
        return 0;
    if (t->o.widen_k <= 0)
        return UINT32_MAX;
    double v = t->nodes[n].visits > 1 ? t->nodes[n].visits : 1;
    double lim = ceil(t->o.widen_k * pow(v, t->o.widen_alpha));
    if (lim < 1)
        return 1;
    return lim > (double)UINT32_MAX ? UINT32_MAX : (unsigned)lim;
}

static bool can_expand(const struct mcts *t, mcts_id id)
{
    const struct node *x = &t->nodes[id];
    if (t->o.widen_k <= 0)
        return !(x->flags & F_EXPANDED) && x->nchildren == 0;
    return !(x->flags & F_FULL) && x->nchildren < mcts_child_limit(t, id);
}

/* Starts loading the children of x, a child being scored, so that the
 * chosen one's are on their way before the choice is made: the next level
 * reads them. Up to four children of 32 bytes span at most three lines.
 * always_inline: a prefetch has no effect a compiler must keep, so a call
 * to a function made only of prefetches may be dropped as dead before it
 * is inlined. */
static inline __attribute__((always_inline)) void prefetch_children(const struct mcts *t,
                                                                    const struct node *x)
{
    unsigned n = x->nchildren;
    mcts_id first = x->first_child;
    if (!n)
        return;
    __builtin_prefetch(&t->nodes[first]);
    if (n > 2)
        __builtin_prefetch(&t->nodes[first + 2]);
    if (n > 1)
        __builtin_prefetch(&t->nodes[first + n - 1]);
}

/* Keeps c if its score beats the best so far; an exact tie replaces the
 * best with probability 1/ties (seeded), so every tied child is equally
 * likely to win. */
static inline void consider(struct mcts *t, mcts_id c, double score, mcts_id *best,
                            double *best_score, uint64_t *ties)
{
    if (__builtin_expect(score == *best_score && *best != MCTS_NONE, 0)) {
        ++*ties;
        if (rng_next(t) % *ties == 0)
            *best = c;
        return;
    }
    /* which child wins is unpredictable: keep it free of branches */
    bool win = score > *best_score || *best == MCTS_NONE;
    *best = win ? c : *best;
    *best_score = win ? score : *best_score;
    *ties = win ? 1 : *ties;
}

/* The child the policy would descend to; MCTS_NONE when every child is
 * pending. Exact ties are broken at random (seeded). Children added by one
 * expansion have consecutive ids, so when a node's children fill the range
 * from its first to its last child (F_CONTIG) they are read in order
 * instead of following the sibling links, and their own children are
 * prefetched. */
static mcts_id pick_child(struct mcts *t, mcts_id p)
{
    const struct node *pn = &t->nodes[p];
    unsigned count = pn->nchildren;
    bool contiguous = pn->flags & F_CONTIG;
    bool prefetch = contiguous && count <= PREFETCH_CHILDREN;
    bool vl = t->o.virtual_loss > 0; /* 0: in-flight iterations are not counted at all */
    uint64_t np = (uint64_t)pn->visits + (vl ? pn->inflight : 0);
    if (np < 1)
        np = 1;
    bool puct = t->o.policy == MCTS_PUCT;
    mcts_id best = MCTS_NONE;
    double best_score = -INFINITY;
    uint64_t ties = 0;
    mcts_id c = pn->first_child;
    if (!puct && t->o.backup == MCTS_BACKUP_MEAN && t->o.max_inflight == 1 && contiguous) {
        /* UCT with mean back-up, nothing else in flight (so no virtual
         * loss) and the children side by side: the general loop below,
         * reduced to what it computes then */
        double c_sqrt_logn = t->o.c * sqrt_log(np);
        const struct node *s = &t->nodes[c], *end = s + count;
        for (; s < end; s++) {
            if (prefetch)
                prefetch_children(t, s);
            if (s->flags & F_PENDING)
                continue;
            uint32_t v = s->visits;
            double score = v ? s->sum / v + c_sqrt_logn * rsqrt(v) : INFINITY;
            consider(t, (mcts_id)(s - t->nodes), score, &best, &best_score, &ties);
        }
        return best;
    }
    if (puct && t->o.backup == MCTS_BACKUP_MEAN && t->o.max_inflight == 1 && contiguous) {
        /* PUCT likewise */
        const struct node *s0 = &t->nodes[c], *end = s0 + count;
        double psum = 0;
        for (const struct node *s = s0; s < end; s++) {
            if (prefetch)
                prefetch_children(t, s);
            psum += s->prior > 0 ? s->prior : 0;
        }
        double explore = t->o.c * sqrt((double)np);
        double fpu = pn->visits ? pn->sum / pn->visits : 0;
        double uniform = 1.0 / count;
        for (const struct node *s = s0; s < end; s++) {
            if (s->flags & F_PENDING)
                continue;
            uint32_t v = s->visits;
            double prior = psum > 0 ? (s->prior > 0 ? s->prior / psum : 0) : uniform;
            double q = v ? s->sum / v : fpu;
            double score = q + explore * prior / (double)(1 + (uint64_t)v);
            consider(t, (mcts_id)(s - t->nodes), score, &best, &best_score, &ties);
        }
        return best;
    }
    bool mean = t->o.backup == MCTS_BACKUP_MEAN;
    double explore = puct ? t->o.c * sqrt((double)np) : 0;
    double c_sqrt_logn = puct ? 0 : t->o.c * sqrt_log(np);
    double psum = 0, fpu = 0;
    if (puct) {
        mcts_id d = c;
        for (unsigned k = 0; k < count; k++, d = contiguous ? d + 1 : t->links[d].next_sibling)
            psum += t->nodes[d].prior > 0 ? t->nodes[d].prior : 0;
        fpu = node_q_vl(t, p);
    }
    double uniform = count ? 1.0 / count : 0;
    for (unsigned k = 0; k < count; k++, c = contiguous ? c + 1 : t->links[c].next_sibling) {
        const struct node *s = &t->nodes[c];
        if (prefetch)
            prefetch_children(t, s);
        if (s->flags & F_PENDING)
            continue;
        uint32_t inflight = s->inflight;
        uint64_t nc = (uint64_t)s->visits + (vl ? inflight : 0);
        double score;
        if (puct) {
            double prior = psum > 0 ? (s->prior > 0 ? s->prior / psum : 0) : uniform;
            double q = nc > 0 ? node_q_vl(t, c) : fpu;
            score = q + explore * prior / (double)(1 + nc);
        } else if (nc == 0) {
            score = INFINITY;
        } else if (mean && !inflight) {
            /* node_q_vl() without virtual loss in flight */
            score = s->sum / s->visits + c_sqrt_logn * rsqrt(nc);
        } else {
            score = node_q_vl(t, c) + c_sqrt_logn * rsqrt(nc);
        }
        consider(t, c, score, &best, &best_score, &ties);
    }
    return best;
}

static bool node_complete(const struct mcts *t, mcts_id id)
{
    const struct node *x = &t->nodes[id];
    if (x->flags & F_PENDING)
        return false;
    if (x->state == MCTS_TERMINAL)
        return (x->flags & F_EVALUATED) && !t->o.reevaluate_terminal;
    if (id != 0 && !(x->flags & F_EVALUATED))
        return false;
    if (!x->nchildren)
        return false;
    if (t->o.widen_k <= 0 ? !(x->flags & F_EXPANDED) && !x->nchildren : !(x->flags & F_FULL))
        return false;
    for (mcts_id c = x->first_child; c != MCTS_NONE; c = t->links[c].next_sibling)
        if (!(t->nodes[c].flags & F_COMPLETE))
            return false;
    return true;
}

/* Recomputes completeness of id and, while it changes, of its ancestors. */
static void update_complete(struct mcts *t, mcts_id id)
{
    while (id != MCTS_NONE) {
        struct node *x = &t->nodes[id];
        bool was = x->flags & F_COMPLETE;
        bool now = node_complete(t, id);
        if (was == now)
            return;
        if (now)
            x->flags |= F_COMPLETE;
        else
            x->flags &= (uint8_t)~F_COMPLETE;
        id = t->links[id].parent;
    }
}

static inline void backup_node(struct mcts *t, mcts_id id, double v)
{
    struct node *x = &t->nodes[id];
    if (!x->visits || v > x->max)
        x->max = (float)v;
    x->visits++;
    x->sum += v;
}

/* Walks from id up to the root, calling backup_node() (delta 0) or adding
 * delta to the iterations in flight. The nodes of the last selection's path
 * are taken from the path, not from the links (which selection does not
 * read), once the walk reaches its end: id is usually that end or one of
 * its new children. */
static void walk_up(struct mcts *t, mcts_id id, double v, int delta)
{
    size_t k = t->path_len;
    for (; id != MCTS_NONE; id = t->links[id].parent) {
        if (k && id == t->path[k - 1]) {
            for (size_t i = k; i-- > 0;) {
                if (delta)
                    t->nodes[t->path[i]].inflight += (uint32_t)delta;
                else
                    backup_node(t, t->path[i], v);
            }
            id = t->path[0];
            k = 0;
            continue;
        }
        if (delta)
            t->nodes[id].inflight += (uint32_t)delta;
        else
            backup_node(t, id, v);
    }
}

static void backup_path(struct mcts *t, mcts_id id, double v)
{
    walk_up(t, id, v, 0);
}

static void virtual_loss(struct mcts *t, mcts_id id, int delta)
{
    walk_up(t, id, 0, delta);
}

/* ---- iterations, work queue and the trampoline --------------------------- */

static void push_task(struct mcts *t, mcts_id node, int kind)
{
    if (t->qlen == t->qcap) {
        size_t cap = t->qcap ? t->qcap * 2 : 16;
        struct task *q = xreallocarray(NULL, cap, sizeof *q);
        for (size_t i = 0; i < t->qlen; i++)
            q[i] = t->queue[(t->qhead + i) & (t->qcap - 1)];
        free(t->queue);
        t->queue = q;
        t->qhead = 0;
        t->qcap = cap;
    }
    t->queue[(t->qhead + t->qlen) & (t->qcap - 1)] = (struct task){node, kind};
    t->qlen++;
}

static uint32_t slot_alloc(struct mcts *t, mcts_id leaf)
{
    uint32_t s = t->free_slot;
    if (s == UINT32_MAX) {
        t->slots = xreallocarray(t->slots, t->nslots + 1, sizeof *t->slots);
        s = t->nslots++;
    } else {
        t->free_slot = t->slots[s].next_free;
    }
    t->slots[s] = (struct slot){leaf, MCTS_NONE, 0, UINT32_MAX};
    t->busy++;
    t->last_slot = s;
    /* only selections made while others are in flight see the loss */
    if (t->o.max_inflight > 1)
        virtual_loss(t, leaf, +1);
    return s;
}

static void slot_release(struct mcts *t, uint32_t s)
{
    if (t->o.max_inflight > 1)
        virtual_loss(t, t->slots[s].leaf, -1);
    t->slots[s].next_free = t->free_slot;
    t->free_slot = s;
    t->busy--;
    t->iterations++;
}

/* The iteration a pending node's callback belongs to: with one in flight at
 * most, the last one started (sparing a write and a read of the node's
 * links). */
static inline uint32_t node_slot(const struct mcts *t, mcts_id n)
{
    return t->o.max_inflight > 1 ? t->slot_of[n] : t->last_slot;
}

/* Marks node pending for a callback of iteration s and queues it. */
static void queue_work(struct mcts *t, uint32_t s, mcts_id node, int kind)
{
    struct node *x = &t->nodes[node];
    x->flags |= F_PENDING;
    if (kind == TASK_EXPAND)
        x->flags |= F_EXPANDING;
    if (t->o.max_inflight > 1) {
        if (!t->slot_of)
            t->slot_of = xreallocarray(NULL, t->cap, sizeof *t->slot_of);
        t->slot_of[node] = s;
    }
    t->slots[s].pending++;
    push_task(t, node, kind);
}

static void fail(struct mcts *t, const char *msg)
{
    if (t->stop != MCTS_STOP_ERROR) {
        free(t->error);
        t->error = xstrdup(msg);
        t->stop = MCTS_STOP_ERROR;
    }
}

enum start { START_WORK, START_DONE, START_STUCK, START_EXHAUSTED };

static inline void path_push(struct mcts *t, mcts_id n)
{
    if (t->path_len == t->path_cap) {
        t->path_cap = t->path_cap ? t->path_cap * 2 : 64;
        t->path = xreallocarray(t->path, t->path_cap, sizeof *t->path);
    }
    t->path[t->path_len++] = n;
}

static int start_iteration(struct mcts *t)
{
    if (t->nodes[0].flags & F_COMPLETE)
        return START_EXHAUSTED;
    mcts_id n = 0;
    if (t->cb.select) {
        mcts_id m = t->cb.select(t, t->ud);
        if (m != MCTS_NONE && m < t->n)
            n = m;
    }
    t->path_len = 0;
    path_push(t, n);
    for (;;) {
        struct node *x = &t->nodes[n];
        if (x->flags & F_PENDING)
            return START_STUCK;
        if (x->state == MCTS_TERMINAL) {
            if (!(x->flags & F_EVALUATED) || t->o.reevaluate_terminal)
                break;
            /* a known value: back it up again, nothing to wait for */
            backup_path(t, n, node_q(t, n));
            t->iterations++;
            return START_DONE;
        }
        if (n != 0 && !(x->flags & F_EVALUATED))
            break;
        if (can_expand(t, n)) {
            if (t->cb.terminal && t->cb.terminal(t, n, t->ud)) {
                t->nodes[n].state = MCTS_TERMINAL;
                update_complete(t, n);
                continue;
            }
            uint32_t s = slot_alloc(t, n);
            t->slots[s].mark = last_child(t, n);
            queue_work(t, s, n, TASK_EXPAND);
            return START_WORK;
        }
        mcts_id c = pick_child(t, n);
        if (c == MCTS_NONE)
            return START_STUCK;
        n = c;
        path_push(t, n);
    }
    uint32_t s = slot_alloc(t, n);
    queue_work(t, s, n, TASK_EVALUATE);
    return START_WORK;
}

static enum mcts_stop check_budget(struct mcts *t)
{
    if (t->cancelled)
        return MCTS_STOP_CANCELLED;
    if (t->o.budget.iterations && t->iterations + t->busy >= t->o.budget.iterations)
        return MCTS_STOP_ITERATIONS;
    if (t->o.budget.tokens && t->tokens >= t->o.budget.tokens)
        return MCTS_STOP_TOKENS;
    if (t->deadline && (t->clock_skip++ & 31) == 0 && now_ms() >= t->deadline)
        return MCTS_STOP_TIME;
    return MCTS_STOP_NONE;
}

static void on_timer(struct loop_timer *timer, void *ud);

static void finish(struct mcts *t)
{
    if (t->loop) {
        /* report from the loop, never from inside an answer */
        if (!t->finishing) {
            t->finishing = true;
            if (t->timer)
                loop_timer_cancel(t->timer);
            t->timer = loop_timer_add(t->loop, 0, on_timer, t);
        }
        return;
    }
    /* without a loop, mcts_run() reports the end as its last step */
    t->running = false;
    t->last_stop = t->stop;
}

#define STEPS_PER_TURN 4096

static void pump(struct mcts *t)
{
    if (t->pumping || !t->running || t->finishing)
        return;
    t->pumping = true;
    unsigned steps = 0;
    bool yielded = false;
    for (;;) {
        if (t->qlen) {
            struct task task = t->queue[t->qhead];
            t->qhead = (t->qhead + 1) & (t->qcap - 1);
            t->qlen--;
            if (task.kind == TASK_EXPAND)
                t->cb.expand(t, task.node, t->ud);
            else
                t->cb.evaluate(t, task.node, t->ud);
            continue;
        }
        if (t->stop == MCTS_STOP_NONE)
            t->stop = check_budget(t);
        if (t->stop != MCTS_STOP_NONE || t->busy >= (uint32_t)t->o.max_inflight)
            break;
        int r = start_iteration(t);
        if (r == START_EXHAUSTED || (r == START_STUCK && t->busy == 0)) {
            t->stop = MCTS_STOP_EXHAUSTED;
            break;
        }
        if (r == START_STUCK)
            break;
        if (t->loop && ++steps >= STEPS_PER_TURN) {
            yielded = true;
            break;
        }
    }
    t->pumping = false;
    if (t->stop != MCTS_STOP_NONE && t->busy == 0 && t->qlen == 0)
        finish(t);
    else if (yielded && !t->timer)
        t->timer = loop_timer_add(t->loop, 0, on_timer, t);
}

static void on_timer(struct loop_timer *timer, void *ud)
{
    (void)timer;
    struct mcts *t = ud;
    t->timer = NULL;
    if (t->finishing) {
        t->finishing = false;
        t->running = false;
        t->last_stop = t->stop;
        if (t->cb.done)
            t->cb.done(t, t->stop, t->ud); /* may free t */
        return;
    }
    pump(t);
}

int mcts_run(struct mcts *t, struct loop *loop)
{
    if (t->running)
        return error_setc(TH_EUSAGE, "this mcts search is already running");
    t->loop = loop;
    t->running = true;
    t->cancelled = false;
    t->finishing = false;
    t->stop = MCTS_STOP_NONE;
    t->clock_skip = 0;
    t->deadline = t->o.budget.ms ? now_ms() + t->o.budget.ms : 0;
    if (loop) {
        t->timer = loop_timer_add(loop, 0, on_timer, t);
        return 0;
    }
    pump(t);
    if (t->running) {
        /* a callback kept its answer for later, but there is no loop */
        t->running = false;
        t->last_stop = t->stop = MCTS_STOP_ERROR;
        free(t->error);
        t->error = xstrdup("an mcts callback did not answer inside the call; late answers need "
                           "an event loop");
    }
    enum mcts_stop why = t->last_stop;
    char *msg = why == MCTS_STOP_ERROR ? xstrdup(t->error ? t->error : "mcts search failed") : NULL;
    if (t->cb.done)
        t->cb.done(t, why, t->ud); /* last: it may free t */
    int rc = msg ? error_set("%s", msg) : 0;
    free(msg);
    return rc;
}

void mcts_cancel(struct mcts *t)
{
    t->cancelled = true;
    if (t->running && t->loop)
        pump(t);
}

void mcts_add_tokens(struct mcts *t, uint64_t tokens)
{
    t->tokens += tokens;
}

/* ---- answers ------------------------------------------------------------- */

static bool answer_ok(struct mcts *t, mcts_id n, bool expanding, const char *what)
{
    if (n < t->n && (t->nodes[n].flags & F_PENDING) &&
        !!(t->nodes[n].flags & F_EXPANDING) == expanding)
        return true;
    char *msg = xasprintf("mcts: %s for node %u, which is not waiting for one", what, n);
    fail(t, msg);
    free(msg);
    return false;
}

static void answer_done(struct mcts *t, uint32_t s)
{
    if (--t->slots[s].pending == 0)
        slot_release(t, s);
    if (t->running && !t->pumping)
        pump(t);
}

mcts_id mcts_add_child(struct mcts *t, mcts_id parent, double prior, const char *payload,
                       size_t len)
{
    if (parent >= t->n || t->n >= MCTS_NONE - 1 || len > UINT32_MAX - 1)
        return MCTS_NONE;
    struct node *p = &t->nodes[parent];
    if (p->nchildren >= MAX_CHILDREN ||
        ((p->flags & F_EXPANDING) && p->nchildren >= mcts_child_limit(t, parent)))
        return MCTS_NONE;
    if (!(prior >= 0) || !isfinite(prior))
        prior = 0;
    mcts_id id = node_add(t, parent, prior);
    if (len)
        mcts_set_payload(t, id, payload, len);
    return id;
}

void mcts_expanded(struct mcts *t, mcts_id n, int rc)
{
    if (!answer_ok(t, n, true, "an expansion answer"))
        return;
    struct node *x = &t->nodes[n];
    uint32_t s = node_slot(t, n);
    x->flags &= (uint8_t) ~(F_PENDING | F_EXPANDING);
    mcts_id mark = t->slots[s].mark;
    mcts_id first_new = mark == MCTS_NONE ? x->first_child : t->links[mark].next_sibling;
    if (rc < 0) {
        char *msg = xasprintf("expanding node %u: %s", n, error_message());
        fail(t, msg);
        free(msg);
    } else if (first_new == MCTS_NONE) {
        if (x->nchildren) {
            x->flags |= F_FULL;
        } else {
            x->state = MCTS_TERMINAL;
            if (!(x->flags & F_EVALUATED) || t->o.reevaluate_terminal)
                queue_work(t, s, n, TASK_EVALUATE);
            else
                backup_path(t, n, node_q(t, n));
        }
    } else {
        x->flags |= F_EXPANDED;
        if (t->o.evaluate_children) {
            for (mcts_id c = first_new; c != MCTS_NONE; c = t->links[c].next_sibling)
                queue_work(t, s, c, TASK_EVALUATE);
        } else {
            mcts_id pick = first_new;
            for (mcts_id c = first_new; c != MCTS_NONE; c = t->links[c].next_sibling)
                if (t->nodes[c].prior > t->nodes[pick].prior)
                    pick = c;
            queue_work(t, s, pick, TASK_EVALUATE);
        }
    }
    update_complete(t, n);
    answer_done(t, s);
}

void mcts_evaluated(struct mcts *t, mcts_id n, double value, int rc)
{
    if (!answer_ok(t, n, false, "an evaluation answer"))
        return;
    struct node *x = &t->nodes[n];
    uint32_t s = node_slot(t, n);
    x->flags &= (uint8_t)~F_PENDING;
    if (rc < 0 || isnan(value)) {
        char *msg = rc < 0 ? xasprintf("evaluating node %u: %s", n, error_message())
                           : xasprintf("evaluating node %u: the value is not a number", n);
        fail(t, msg);
        free(msg);
    } else {
        value = value < 0 ? 0 : value > 1 ? 1 : value;
        x->flags |= F_EVALUATED;
        backup_path(t, n, value);
        update_complete(t, n);
    }
    answer_done(t, s);
}

void mcts_backup(struct mcts *t, mcts_id n, double value)
{
    if (n >= t->n || isnan(value))
        return;
    value = value < 0 ? 0 : value > 1 ? 1 : value;
    t->nodes[n].flags |= F_EVALUATED;
    backup_path(t, n, value);
    update_complete(t, n);
}

/* ---- reading the tree ------------------------------------------------------ */

size_t mcts_size(const struct mcts *t)
{
    return t->n;
}

#define NODE_FIELD(field, none) (n < t->n ? t->nodes[n].field : (none))
#define LINK_FIELD(field, none) (n < t->n ? t->links[n].field : (none))

mcts_id mcts_parent(const struct mcts *t, mcts_id n)
{
    return LINK_FIELD(parent, MCTS_NONE);
}

mcts_id mcts_first_child(const struct mcts *t, mcts_id n)
{
    return NODE_FIELD(first_child, MCTS_NONE);
}

mcts_id mcts_next_sibling(const struct mcts *t, mcts_id n)
{
    return LINK_FIELD(next_sibling, MCTS_NONE);
}

unsigned mcts_child_count(const struct mcts *t, mcts_id n)
{
    return NODE_FIELD(nchildren, 0);
}

unsigned mcts_depth(const struct mcts *t, mcts_id n)
{
    unsigned d = 0;
    if (n >= t->n)
        return 0;
    while (t->links[n].parent != MCTS_NONE) {
        n = t->links[n].parent;
        d++;
    }
    return d;
}

uint32_t mcts_visits(const struct mcts *t, mcts_id n)
{
    return n < t->n ? t->nodes[n].visits : 0;
}

double mcts_mean(const struct mcts *t, mcts_id n)
{
    if (n >= t->n || !t->nodes[n].visits)
        return 0;
    return t->nodes[n].sum / t->nodes[n].visits;
}

double mcts_max(const struct mcts *t, mcts_id n)
{
    return NODE_FIELD(max, 0);
}

double mcts_prior(const struct mcts *t, mcts_id n)
{
    return NODE_FIELD(prior, 0);
}

enum mcts_state mcts_state(const struct mcts *t, mcts_id n)
{
    if (n >= t->n)
        return MCTS_TERMINAL;
    if (t->nodes[n].flags & F_PENDING)
        return MCTS_PENDING;
    return (enum mcts_state)t->nodes[n].state;
}

bool mcts_has_value(const struct mcts *t, mcts_id n)
{
    return n < t->n && (t->nodes[n].flags & F_EVALUATED);
}

const char *mcts_payload(const struct mcts *t, mcts_id n, size_t *len)
{
    if (n >= t->n || !t->payloads || !t->payloads[n].data) {
        if (len)
            *len = 0;
        return "";
    }
    if (len)
        *len = t->payloads[n].len;
    return t->payloads[n].data;
}

void mcts_set_payload(struct mcts *t, mcts_id n, const char *payload, size_t len)
{
    if (n >= t->n || len > UINT32_MAX - 1)
        return;
    if (!t->payloads) {
        if (!len || !payload)
            return;
        t->payloads = xcalloc(t->cap, sizeof *t->payloads);
    }
    struct payload *x = &t->payloads[n];
    free(x->data);
    x->data = NULL;
    x->len = 0;
    if (len && payload) {
        x->data = xmalloc(len + 1);
        memcpy(x->data, payload, len);
        x->data[len] = '\0';
        x->len = (uint32_t)len;
    }
}

void mcts_set_terminal(struct mcts *t, mcts_id n)
{
    if (n >= t->n)
        return;
    t->nodes[n].state = MCTS_TERMINAL;
    update_complete(t, n);
}

uint64_t mcts_iterations(const struct mcts *t)
{
    return t->iterations;
}

uint64_t mcts_tokens(const struct mcts *t)
{
    return t->tokens;
}

enum mcts_stop mcts_stop_reason(const struct mcts *t)
{
    return t->running ? MCTS_STOP_NONE : t->last_stop;
}

const char *mcts_last_error(const struct mcts *t)
{
    return t->error ? t->error : "";
}

const struct mcts_options *mcts_get_options(const struct mcts *t)
{
    return &t->o;
}

void mcts_set_budget(struct mcts *t, uint64_t iterations, uint64_t ms, uint64_t tokens)
{
    t->o.budget.iterations = iterations;
    t->o.budget.ms = ms;
    t->o.budget.tokens = tokens;
}

bool mcts_complete(const struct mcts *t, mcts_id n)
{
    return n < t->n && (t->nodes[n].flags & F_COMPLETE);
}

const char *mcts_stop_name(enum mcts_stop why)
{
    switch (why) {
    case MCTS_STOP_NONE:
        return "running";
    case MCTS_STOP_ITERATIONS:
        return "iterations";
    case MCTS_STOP_TIME:
        return "time";
    case MCTS_STOP_TOKENS:
        return "tokens";
    case MCTS_STOP_EXHAUSTED:
        return "exhausted";
    case MCTS_STOP_CANCELLED:
        return "cancelled";
    case MCTS_STOP_ERROR:
        return "error";
    }
    return "unknown";
}

mcts_id mcts_best(const struct mcts *t)
{
    mcts_id n = 0;
    if (t->o.backup == MCTS_BACKUP_MAX) {
        /* down the children holding the best value, to the deepest node that
         * holds it */
        for (;;) {
            const struct node *x = &t->nodes[n];
            mcts_id best = MCTS_NONE;
            for (mcts_id c = x->first_child; c != MCTS_NONE; c = t->links[c].next_sibling) {
                const struct node *y = &t->nodes[c];
                if (!t->nodes[c].visits)
                    continue;
                if (best == MCTS_NONE || y->max > t->nodes[best].max ||
                    (y->max == t->nodes[best].max && t->nodes[c].visits > t->nodes[best].visits))
                    best = c;
            }
            if (best == MCTS_NONE || t->nodes[best].max < x->max)
                return n;
            n = best;
        }
    }
    for (;;) {
        const struct node *x = &t->nodes[n];
        mcts_id best = MCTS_NONE;
        for (mcts_id c = x->first_child; c != MCTS_NONE; c = t->links[c].next_sibling) {
            if (!t->nodes[c].visits)
                continue;
            if (best == MCTS_NONE || t->nodes[c].visits > t->nodes[best].visits ||
                (t->nodes[c].visits == t->nodes[best].visits &&
                 mcts_mean(t, c) > mcts_mean(t, best)))
                best = c;
        }
        if (best == MCTS_NONE)
            return n;
        n = best;
    }
}

size_t mcts_node_bytes(void)
{
    return sizeof(struct node) + sizeof(struct link);
}

size_t mcts_memory(const struct mcts *t)
{
    size_t bytes =
        sizeof *t + (t->cap ? t->cap + ARRAY_SHIFT : 0) * (sizeof *t->nodes + sizeof *t->links) +
        (t->last ? t->cap * sizeof *t->last : 0) + (t->slot_of ? t->cap * sizeof *t->slot_of : 0) +
        t->qcap * sizeof *t->queue + t->nslots * sizeof *t->slots + t->path_cap * sizeof *t->path;
    if (t->payloads) {
        bytes += t->cap * sizeof *t->payloads;
        for (size_t i = 0; i < t->n; i++)
            if (t->payloads[i].data)
                bytes += t->payloads[i].len + 1;
    }
    return bytes;
}

/* ---- persistence ----------------------------------------------------------- */

static const struct store_migration mcts_migrations[] = {
    {1, "CREATE TABLE mcts_tree ("
        " name TEXT PRIMARY KEY,"
        " saved_at TEXT NOT NULL,"
        " policy TEXT NOT NULL,"
        " c REAL NOT NULL,"
        " widen_k REAL NOT NULL,"
        " widen_alpha REAL NOT NULL,"
        " backup TEXT NOT NULL,"
        " virtual_loss REAL NOT NULL,"
        " max_inflight INTEGER NOT NULL,"
        " evaluate_children INTEGER NOT NULL,"
        " reevaluate_terminal INTEGER NOT NULL,"
        " seed INTEGER NOT NULL,"
        " budget_iterations INTEGER NOT NULL,"
        " budget_ms INTEGER NOT NULL,"
        " budget_tokens INTEGER NOT NULL,"
        " rng INTEGER NOT NULL,"
        " iterations INTEGER NOT NULL,"
        " tokens INTEGER NOT NULL,"
        " nodes INTEGER NOT NULL);"
        "CREATE TABLE mcts_node ("
        " tree TEXT NOT NULL REFERENCES mcts_tree(name) ON DELETE CASCADE,"
        " id INTEGER NOT NULL,"
        " parent INTEGER,"
        " visits INTEGER NOT NULL,"
        " value_sum REAL NOT NULL,"
        " max REAL NOT NULL,"
        " prior REAL NOT NULL,"
        " state INTEGER NOT NULL,"
        " flags INTEGER NOT NULL,"
        " payload BLOB,"
        " PRIMARY KEY (tree, id)) WITHOUT ROWID"},
};

void mcts_register_migrations(void)
{
    store_register_migrations("mcts", mcts_migrations,
                              sizeof mcts_migrations / sizeof mcts_migrations[0]);
}

static int db_fail(struct store *store, const char *what)
{
    return error_set("cannot %s in '%s': %s", what, store->path, sqlite3_errmsg(store->db));
}

int mcts_save(const struct mcts *t, struct store *store, const char *name)
{
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (sqlite3_exec(store->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(store, "begin saving the search tree");
    if (sqlite3_prepare_v2(store->db, "DELETE FROM mcts_tree WHERE name = ?1", -1, &st, NULL) !=
            SQLITE_OK ||
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_DONE) {
        rc = db_fail(store, "replace the search tree");
        goto cleanup;
    }
    sqlite3_finalize(st);
    st = NULL;
    const struct mcts_options *o = &t->o;
    if (sqlite3_prepare_v2(store->db,
                           "INSERT INTO mcts_tree(name, saved_at, policy, c, widen_k, widen_alpha,"
                           " backup, virtual_loss, max_inflight, evaluate_children,"
                           " reevaluate_terminal, seed, budget_iterations, budget_ms,"
                           " budget_tokens, rng, iterations, tokens, nodes) VALUES (?1,"
                           " strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), ?2, ?3, ?4, ?5, ?6, ?7,"
                           " ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = db_fail(store, "save the search tree");
        goto cleanup;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, o->policy == MCTS_PUCT ? "puct" : "uct", -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 3, o->c);
    sqlite3_bind_double(st, 4, o->widen_k);
    sqlite3_bind_double(st, 5, o->widen_alpha);
    sqlite3_bind_text(st, 6, o->backup == MCTS_BACKUP_MAX ? "max" : "mean", -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 7, o->virtual_loss);
    sqlite3_bind_int(st, 8, o->max_inflight);
    sqlite3_bind_int(st, 9, o->evaluate_children);
    sqlite3_bind_int(st, 10, o->reevaluate_terminal);
    sqlite3_bind_int64(st, 11, (sqlite3_int64)o->seed);
    sqlite3_bind_int64(st, 12, (sqlite3_int64)o->budget.iterations);
    sqlite3_bind_int64(st, 13, (sqlite3_int64)o->budget.ms);
    sqlite3_bind_int64(st, 14, (sqlite3_int64)o->budget.tokens);
    sqlite3_bind_int64(st, 15, (sqlite3_int64)t->rng);
    sqlite3_bind_int64(st, 16, (sqlite3_int64)t->iterations);
    sqlite3_bind_int64(st, 17, (sqlite3_int64)t->tokens);
    sqlite3_bind_int64(st, 18, (sqlite3_int64)t->n);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = db_fail(store, "save the search tree");
        goto cleanup;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (sqlite3_prepare_v2(store->db,
                           "INSERT INTO mcts_node(tree, id, parent, visits, value_sum, max,"
                           " prior, state, flags, payload)"
                           " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = db_fail(store, "save the search tree");
        goto cleanup;
    }
    for (size_t i = 0; i < t->n; i++) {
        const struct node *x = &t->nodes[i];
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)i);
        if (t->links[i].parent == MCTS_NONE)
            sqlite3_bind_null(st, 3);
        else
            sqlite3_bind_int64(st, 3, t->links[i].parent);
        sqlite3_bind_int64(st, 4, t->nodes[i].visits);
        sqlite3_bind_double(st, 5, t->nodes[i].sum);
        sqlite3_bind_double(st, 6, x->max);
        sqlite3_bind_double(st, 7, x->prior);
        sqlite3_bind_int(st, 8, x->state);
        sqlite3_bind_int(st, 9, x->flags & F_SAVED);
        size_t plen;
        const char *p = mcts_payload(t, (mcts_id)i, &plen);
        if (plen)
            sqlite3_bind_blob(st, 10, p, (int)plen, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 10);
        if (sqlite3_step(st) != SQLITE_DONE) {
            rc = db_fail(store, "save the search tree");
            goto cleanup;
        }
    }
    sqlite3_finalize(st);
    st = NULL;
    if (sqlite3_exec(store->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        rc = db_fail(store, "commit the search tree");
cleanup:
    sqlite3_finalize(st);
    if (rc < 0)
        sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static int tree_not_found(const char *name)
{
    return error_setc(TH_ENOTFOUND,
                      "no saved search tree named '%s' (a tree is saved with :save(name))", name);
}

int mcts_load_options(struct mcts_options *out, struct store *store, const char *name)
{
    sqlite3_stmt *st = NULL;
    int rc = 0;
    mcts_options_default(out);
    if (sqlite3_prepare_v2(store->db,
                           "SELECT policy, c, widen_k, widen_alpha, backup, virtual_loss,"
                           " max_inflight, evaluate_children, reevaluate_terminal, seed,"
                           " budget_iterations, budget_ms, budget_tokens"
                           " FROM mcts_tree WHERE name = ?1",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = db_fail(store, "read the search tree");
        goto cleanup;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    if (step == SQLITE_DONE) {
        rc = tree_not_found(name);
        goto cleanup;
    }
    if (step != SQLITE_ROW) {
        rc = db_fail(store, "read the search tree");
        goto cleanup;
    }
    const char *policy = (const char *)sqlite3_column_text(st, 0);
    out->policy = policy && strcmp(policy, "puct") == 0 ? MCTS_PUCT : MCTS_UCT;
    out->c = sqlite3_column_double(st, 1);
    out->widen_k = sqlite3_column_double(st, 2);
    out->widen_alpha = sqlite3_column_double(st, 3);
    const char *backup = (const char *)sqlite3_column_text(st, 4);
    out->backup = backup && strcmp(backup, "max") == 0 ? MCTS_BACKUP_MAX : MCTS_BACKUP_MEAN;
    out->virtual_loss = sqlite3_column_double(st, 5);
    out->max_inflight = sqlite3_column_int(st, 6);
    out->evaluate_children = sqlite3_column_int(st, 7) != 0;
    out->reevaluate_terminal = sqlite3_column_int(st, 8) != 0;
    out->seed = (uint64_t)sqlite3_column_int64(st, 9);
    out->budget.iterations = (uint64_t)sqlite3_column_int64(st, 10);
    out->budget.ms = (uint64_t)sqlite3_column_int64(st, 11);
    out->budget.tokens = (uint64_t)sqlite3_column_int64(st, 12);
cleanup:
    sqlite3_finalize(st);
    return rc;
}

int mcts_load(struct mcts *t, struct store *store, const char *name)
{
    sqlite3_stmt *st = NULL;
    int rc = 0;
    bool cleared = false;
    if (t->running)
        return error_setc(TH_EUSAGE, "cannot load '%s' into a running search", name);
    if (sqlite3_exec(store->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(store, "read the search tree");
    if (sqlite3_prepare_v2(store->db,
                           "SELECT rng, iterations, tokens, nodes FROM mcts_tree WHERE name = ?1",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = db_fail(store, "read the search tree");
        goto cleanup;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    if (step != SQLITE_ROW) {
        rc = step == SQLITE_DONE ? tree_not_found(name) : db_fail(store, "read the search tree");
        goto cleanup;
    }
    uint64_t rng = (uint64_t)sqlite3_column_int64(st, 0);
    uint64_t iterations = (uint64_t)sqlite3_column_int64(st, 1);
    uint64_t tokens = (uint64_t)sqlite3_column_int64(st, 2);
    sqlite3_int64 count = sqlite3_column_int64(st, 3);
    sqlite3_finalize(st);
    st = NULL;
    if (count < 1 || count >= (sqlite3_int64)MCTS_NONE) {
        rc = error_set("saved search tree '%s' in '%s' is damaged: %lld nodes", name, store->path,
                       (long long)count);
        goto cleanup;
    }
    if (sqlite3_prepare_v2(store->db,
                           "SELECT id, parent, visits, value_sum, max, prior, state, flags,"
                           " payload FROM mcts_node WHERE tree = ?1 ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = db_fail(store, "read the search tree");
        goto cleanup;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    tree_clear(t);
    cleared = true;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        sqlite3_int64 id = sqlite3_column_int64(st, 0);
        bool root = sqlite3_column_type(st, 1) == SQLITE_NULL;
        sqlite3_int64 parent = root ? -1 : sqlite3_column_int64(st, 1);
        if (id != (sqlite3_int64)t->n || root != (id == 0) ||
            (!root && (parent < 0 || parent >= id || t->nodes[parent].nchildren >= MAX_CHILDREN))) {
            rc = error_set("saved search tree '%s' in '%s' is damaged at node %lld", name,
                           store->path, (long long)id);
            goto cleanup;
        }
        mcts_id nid = node_add(t, root ? MCTS_NONE : (mcts_id)parent, sqlite3_column_double(st, 5));
        struct node *x = &t->nodes[nid];
        t->nodes[nid].visits = (uint32_t)sqlite3_column_int64(st, 2);
        t->nodes[nid].sum = sqlite3_column_double(st, 3);
        x->max = (float)sqlite3_column_double(st, 4);
        x->state = sqlite3_column_int(st, 6) == MCTS_TERMINAL ? MCTS_TERMINAL : MCTS_EXPANDABLE;
        x->flags |= (uint8_t)(sqlite3_column_int(st, 7) & F_SAVED);
        int len = sqlite3_column_bytes(st, 8);
        if (len > 0)
            mcts_set_payload(t, nid, sqlite3_column_blob(st, 8), (size_t)len);
    }
    if (step != SQLITE_DONE) {
        rc = db_fail(store, "read the search tree");
        goto cleanup;
    }
    if ((sqlite3_int64)t->n != count) {
        rc = error_set("saved search tree '%s' in '%s' is damaged: %zu of %lld nodes", name,
                       store->path, t->n, (long long)count);
        goto cleanup;
    }
    t->rng = rng;
    t->iterations = iterations;
    t->tokens = tokens;
cleanup:
    sqlite3_finalize(st);
    sqlite3_exec(store->db, rc < 0 ? "ROLLBACK" : "COMMIT", NULL, NULL, NULL);
    if (rc < 0 && cleared) {
        /* never leave a half-loaded tree: back to a lone root */
        tree_clear(t);
        node_add(t, MCTS_NONE, 1.0);
    }
    return rc;
}
