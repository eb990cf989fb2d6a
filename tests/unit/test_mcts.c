/* Tests of mcts: a bandit whose visits concentrate on the best arm, PUCT
 * following good priors, progressive widening bounding children, virtual
 * loss spreading concurrent selections, identical trees for identical
 * seeds, the short selection path growing the same tree as the general
 * one, consistent links and visits whether children are added at once or
 * over several expansions and whether selections start at the root or
 * below, a save / load round trip mid-search that continues exactly as an
 * uninterrupted search, late answers from loop timers, exhaustion of a
 * finite tree, max back-up, errors reported by callbacks, and a done
 * callback that frees the search. */
#include "check.h"
#include "error.h"
#include "loop.h"
#include "mcts.h"
#include "store.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/thalamus-test-mcts-XXXXXX";

static uint64_t test_rng = 1;

static double uniform01(void)
{
    test_rng ^= test_rng << 13;
    test_rng ^= test_rng >> 7;
    test_rng ^= test_rng << 17;
    return (double)(test_rng >> 11) / 9007199254740992.0;
}

static uint64_t hash_str(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

/* ---- a deterministic synthetic problem --------------------------------------
 * Nodes are paths ("r", "r.0", "r.0.2"...); each node has `width` children
 * down to `depth`; the value of a node is a hash of its path, quantised to
 * quarters so that ties happen. */
struct synth {
    unsigned width, depth;
    int expands, evaluates;
    int refused; /* mcts_add_child() refusals (widening) */
};

static void synth_expand(struct mcts *t, mcts_id n, void *ud)
{
    struct synth *s = ud;
    s->expands++;
    size_t len;
    const char *path = mcts_payload(t, n, &len);
    for (unsigned i = 0; i < s->width; i++) {
        char child[256];
        int m = snprintf(child, sizeof child, "%s.%u", len ? path : "r", i);
        double prior = (double)(hash_str(child, (size_t)m) % 100) / 100.0;
        if (mcts_add_child(t, n, prior, child, (size_t)m) == MCTS_NONE)
            s->refused++;
    }
    mcts_expanded(t, n, 0);
}

static void synth_evaluate(struct mcts *t, mcts_id n, void *ud)
{
    struct synth *s = ud;
    s->evaluates++;
    size_t len;
    const char *path = mcts_payload(t, n, &len);
    mcts_evaluated(t, n, (double)(hash_str(path, len) % 5) / 4.0, 0);
}

static bool synth_terminal(struct mcts *t, mcts_id n, void *ud)
{
    struct synth *s = ud;
    return mcts_depth(t, n) >= s->depth;
}

static const struct mcts_callbacks synth_cb = {
    .expand = synth_expand,
    .evaluate = synth_evaluate,
    .terminal = synth_terminal,
};

/* Whether two trees have the same shape, statistics and payloads. */
static bool same_tree(const struct mcts *a, const struct mcts *b)
{
    if (mcts_size(a) != mcts_size(b) || mcts_iterations(a) != mcts_iterations(b))
        return false;
    for (mcts_id i = 0; i < mcts_size(a); i++) {
        size_t la, lb;
        const char *pa = mcts_payload(a, i, &la), *pb = mcts_payload(b, i, &lb);
        if (mcts_parent(a, i) != mcts_parent(b, i) || mcts_visits(a, i) != mcts_visits(b, i) ||
            mcts_mean(a, i) != mcts_mean(b, i) || mcts_max(a, i) != mcts_max(b, i) ||
            mcts_prior(a, i) != mcts_prior(b, i) || mcts_state(a, i) != mcts_state(b, i) ||
            la != lb || memcmp(pa, pb, la) != 0)
            return false;
    }
    return true;
}

/* ---- bandit ------------------------------------------------------------------ */

static const double arm_p[] = {0.2, 0.45, 0.5, 0.8, 0.6};
#define ARMS (sizeof arm_p / sizeof arm_p[0])

static void bandit_expand(struct mcts *t, mcts_id n, void *ud)
{
    (void)ud;
    for (unsigned i = 0; i < ARMS; i++)
        mcts_add_child(t, n, 1.0 / ARMS, NULL, 0);
    mcts_expanded(t, n, 0);
}

static void bandit_evaluate(struct mcts *t, mcts_id n, void *ud)
{
    int *pulls = ud;
    pulls[n]++;
    mcts_evaluated(t, n, uniform01() < arm_p[n - 1] ? 1.0 : 0.0, 0);
}

static bool bandit_terminal(struct mcts *t, mcts_id n, void *ud)
{
    (void)t;
    (void)ud;
    return n != 0;
}

static void test_bandit_concentrates_on_best_arm(void)
{
    struct mcts_options o;
    mcts_options_default(&o);
    o.reevaluate_terminal = true;
    o.budget.iterations = 3000;
    o.seed = 7;
    struct mcts_callbacks cb = {
        .expand = bandit_expand, .evaluate = bandit_evaluate, .terminal = bandit_terminal};
    int pulls[ARMS + 1] = {0};
    struct mcts *t = NULL;
    test_rng = 12345;
    REQUIRE(mcts_new(&t, &o, &cb, pulls) == 0);
    REQUIRE(mcts_run(t, NULL) == 0);
    CHECK_EQ_INT(mcts_stop_reason(t), MCTS_STOP_ITERATIONS);
    CHECK_EQ_INT(mcts_iterations(t), 3000);
    CHECK_EQ_INT(mcts_size(t), ARMS + 1);
    mcts_id best_arm = 4; /* p = 0.8 */
    for (mcts_id a = 1; a <= ARMS; a++) {
        CHECK_EQ_INT(mcts_visits(t, a), pulls[a]); /* each visit pulled again */
        if (a != best_arm)
            CHECK(mcts_visits(t, best_arm) > 2 * mcts_visits(t, a));
    }
    CHECK(mcts_visits(t, best_arm) > 3000 / 2);
    CHECK(fabs(mcts_mean(t, best_arm) - 0.8) < 0.05);
    CHECK_EQ_INT(mcts_best(t), best_arm);
    mcts_free(t);
}

/* ---- PUCT and priors ------------------------------------------------------------- */

static void flat_expand(struct mcts *t, mcts_id n, void *ud)
{
    (void)ud;
    for (unsigned i = 0; i < 10; i++)
        mcts_add_child(t, n, i == 6 ? 0.91 : 0.01, NULL, 0);
    mcts_expanded(t, n, 0);
}

static void flat_evaluate(struct mcts *t, mcts_id n, void *ud)
{
    (void)ud;
    mcts_evaluated(t, n, 0.5, 0);
}

static void test_puct_follows_priors(void)
{
    struct mcts_callbacks cb = {
        .expand = flat_expand, .evaluate = flat_evaluate, .terminal = bandit_terminal};
    struct mcts_options o;
    mcts_options_default(&o);
    o.policy = MCTS_PUCT;
    o.c = 1.25;
    o.evaluate_children = false;
    o.reevaluate_terminal = true;
    o.budget.iterations = 400;
    struct mcts *t = NULL;
    REQUIRE(mcts_new(&t, &o, &cb, NULL) == 0);
    REQUIRE(mcts_run(t, NULL) == 0);
    mcts_id favourite = 7; /* the seventh child: id 7 */
    uint32_t others = 0;
    for (mcts_id c = 1; c <= 10; c++)
        if (c != favourite)
            others += mcts_visits(t, c);
    CHECK(mcts_visits(t, favourite) > 3 * others);
    CHECK_EQ_INT(mcts_best(t), favourite);
    mcts_free(t);

    /* the same problem under UCT ignores priors: visits spread evenly */
    o.policy = MCTS_UCT;
    o.c = 1.414;
    REQUIRE(mcts_new(&t, &o, &cb, NULL) == 0);
    REQUIRE(mcts_run(t, NULL) == 0);
    uint32_t lo = UINT32_MAX, hi = 0;
    for (mcts_id c = 1; c <= 10; c++) {
        lo = mcts_visits(t, c) < lo ? mcts_visits(t, c) : lo;
        hi = mcts_visits(t, c) > hi ? mcts_visits(t, c) : hi;
    }
    CHECK(hi - lo <= 1);
    mcts_free(t);
}

/* ---- progressive widening ------------------------------------------------------------ */

static void test_widening_bounds_children(void)
{
    struct synth s = {.width = 50, .depth = 3};
    struct mcts_options o;
    mcts_options_default(&o);
    o.widen_k = 1;
    o.widen_alpha = 0.5;
    o.budget.iterations = 400;
    struct mcts *t = NULL;
    REQUIRE(mcts_new(&t, &o, &synth_cb, &s) == 0);
    REQUIRE(mcts_run(t, NULL) == 0);
    CHECK(s.refused > 0);
    unsigned root_children = mcts_child_count(t, 0);
    CHECK(root_children > 1); /* it did widen as visits grew */
    CHECK(root_children < 50);
    /* every node: at most ceil(k * visits^alpha) children */
    for (mcts_id n = 0; n < mcts_size(t); n++) {
        double v = mcts_visits(t, n) > 1 ? mcts_visits(t, n) : 1;
        CHECK(mcts_child_count(t, n) <= (unsigned)ceil(sqrt(v)));
        CHECK(mcts_child_count(t, n) <= mcts_child_limit(t, n));
    }
    mcts_free(t);

    /* without widening every expansion adds all fifty */
    struct synth s2 = {.width = 50, .depth = 3};
    o.widen_k = 0;
    REQUIRE(mcts_new(&t, &o, &synth_cb, &s2) == 0);
    REQUIRE(mcts_run(t, NULL) == 0);
    CHECK_EQ_INT(s2.refused, 0);
    CHECK_EQ_INT(mcts_child_count(t, 0), 50);
    mcts_free(t);
}

/* ---- determinism ------------------------------------------------------------------------ */

static struct mcts *synth_run(uint64_t seed, uint64_t iterations, struct synth *s,
                              enum mcts_policy policy)
{
    struct mcts_options o;
    mcts_options_default(&o);
    o.policy = policy;
    o.seed = seed;
    o.evaluate_children = false;
    o.budget.iterations = iterations;
    struct mcts *t = NULL;
    if (mcts_new(&t, &o, &synth_cb, s) < 0 || mcts_run(t, NULL) < 0) {
        mcts_free(t);
        return NULL;
    }
    return t;
}

static void test_same_seed_same_tree(void)
{
    struct synth s = {.width = 4, .depth = 5};
    struct mcts *a = synth_run(42, 500, &s, MCTS_UCT);
    struct mcts *b = synth_run(42, 500, &s, MCTS_UCT);
    struct mcts *c = synth_run(43, 500, &s, MCTS_UCT);
    REQUIRE(a && b && c);
    CHECK(mcts_size(a) > 100);
    CHECK(same_tree(a, b));
    CHECK(!same_tree(a, c)); /* the seed does decide ties */
    mcts_free(a);
    mcts_free(b);
    mcts_free(c);
}

/* Selection has a short path for the common case (mean back-up, one
 * iteration in flight, children with consecutive ids) beside the general
 * one. With answers given inside the callbacks only one iteration is ever
 * in flight, so a search allowing four takes the general path to the very
 * same tree. */
static void test_short_path_matches_general_selection(void)
{
    struct synth s = {.width = 4, .depth = 7};
    for (int policy = MCTS_UCT; policy <= MCTS_PUCT; policy++) {
        struct mcts *t[2] = {NULL, NULL};
        for (int k = 0; k < 2; k++) {
            struct mcts_options o;
            mcts_options_default(&o);
            o.policy = (enum mcts_policy)policy;
            o.seed = 5;
            o.evaluate_children = false;
            o.max_inflight = k ? 4 : 1;
            o.budget.iterations = 8000;
            REQUIRE(mcts_new(&t[k], &o, &synth_cb, &s) == 0);
            REQUIRE(mcts_run(t[k], NULL) == 0);
        }
        CHECK(mcts_size(t[0]) > 1000);
        uint32_t most = 0; /* past the tables of small counts */
        for (mcts_id c = mcts_first_child(t[0], 0); c != MCTS_NONE; c = mcts_next_sibling(t[0], c))
            most = mcts_visits(t[0], c) > most ? mcts_visits(t[0], c) : most;
        CHECK(most > 1024);
        CHECK(same_tree(t[0], t[1]));
        mcts_free(t[0]);
        mcts_free(t[1]);
    }
}

/* ---- links and statistics ------------------------------------------------------------------ */

static int selects;

/* Every third iteration starts from the newest node instead of the root. */
static mcts_id select_newest(struct mcts *t, void *ud)
{
    (void)ud;
    return ++selects % 3 == 0 ? (mcts_id)(mcts_size(t) - 1) : MCTS_NONE;
}

static const struct mcts_callbacks synth_select_cb = {
    .expand = synth_expand,
    .evaluate = synth_evaluate,
    .terminal = synth_terminal,
    .select = select_newest,
};

/* Checks every node's children (in order, each pointing back to it, all
 * counted) and visits (a value backed up through a child went through its
 * parent, and an internal node's own evaluation adds one); returns how many
 * nodes have children whose ids are not consecutive. */
static int check_links(const struct mcts *t)
{
    size_t n = mcts_size(t), children = 0;
    int scattered = 0;
    bool ok = true;
    for (mcts_id i = 0; i < n && ok; i++) {
        uint64_t visits = 0;
        unsigned count = 0;
        mcts_id first = mcts_first_child(t, i), prev = i;
        for (mcts_id c = first; c != MCTS_NONE && ok; c = mcts_next_sibling(t, c)) {
            ok = mcts_parent(t, c) == i && c > prev && c < n;
            prev = c;
            count++;
            visits += mcts_visits(t, c);
        }
        children += count;
        ok = ok && count == mcts_child_count(t, i);
        if (ok && count) {
            ok = mcts_visits(t, i) == visits + (i != 0 && mcts_has_value(t, i));
            scattered += prev - first + 1 != count;
        }
    }
    CHECK(ok);
    CHECK_EQ_INT(children, n - 1);
    return scattered;
}

static void test_links_and_visits_stay_consistent(void)
{
    struct synth s = {.width = 4, .depth = 6};
    struct {
        enum mcts_policy policy;
        double widen_k;
        bool select, evaluate_children;
    } runs[] = {
        {MCTS_UCT, 0, false, true},   /* children added all at once */
        {MCTS_PUCT, 1, false, false}, /* widening: over several expansions */
        {MCTS_UCT, 2, true, false},   /* and selections starting below the root */
    };
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        struct mcts_options o;
        mcts_options_default(&o);
        o.policy = runs[r].policy;
        o.widen_k = runs[r].widen_k;
        o.evaluate_children = runs[r].evaluate_children;
        o.seed = 3;
        o.budget.iterations = 2000;
        selects = 0;
        struct mcts *t = NULL;
        REQUIRE(mcts_new(&t, &o, runs[r].select ? &synth_select_cb : &synth_cb, &s) == 0);
        REQUIRE(mcts_run(t, NULL) == 0);
        CHECK(mcts_size(t) > 300);
        int scattered = check_links(t);
        if (runs[r].widen_k > 0)
            CHECK(scattered > 0);
        else
            CHECK_EQ_INT(scattered, 0);
        if (runs[r].select)
            CHECK(selects > 600);
        mcts_free(t);
    }
}

/* ---- persistence ------------------------------------------------------------------------ */

static void test_save_load_mid_search(void)
{
    char path[256];
    snprintf(path, sizeof path, "%s/tree.db", dir);
    store_reset_migrations();
    mcts_register_migrations();
    struct store *store = NULL;
    REQUIRE(store_open(&store, path) == 0);

    struct synth s = {.width = 4, .depth = 5};
    struct mcts *whole = synth_run(9, 600, &s, MCTS_PUCT);
    struct mcts *half = synth_run(9, 250, &s, MCTS_PUCT);
    REQUIRE(whole && half);
    REQUIRE(mcts_save(half, store, "search") == 0);
    /* saving again replaces the earlier save */
    REQUIRE(mcts_save(half, store, "search") == 0);
    store_close(store);

    REQUIRE(store_open(&store, path) == 0);
    struct mcts_options o;
    REQUIRE(mcts_load_options(&o, store, "search") == 0);
    CHECK_EQ_INT(o.policy, MCTS_PUCT);
    CHECK_EQ_INT(o.seed, 9);
    CHECK_EQ_INT(o.budget.iterations, 250);
    o.budget.iterations = 600;
    struct mcts *resumed = NULL;
    REQUIRE(mcts_new(&resumed, &o, &synth_cb, &s) == 0);
    REQUIRE(mcts_load(resumed, store, "search") == 0);
    CHECK(same_tree(half, resumed));
    CHECK_EQ_INT(mcts_iterations(resumed), 250);
    REQUIRE(mcts_run(resumed, NULL) == 0);
    CHECK(same_tree(whole, resumed));
    CHECK_EQ_INT(mcts_best(whole), mcts_best(resumed));

    /* an unknown name is reported as such and leaves the tree alone */
    size_t size = mcts_size(resumed);
    CHECK_EQ_INT(mcts_load(resumed, store, "nope"), TH_ENOTFOUND);
    CHECK_CONTAINS(error_message(), "'nope'");
    CHECK_EQ_INT(mcts_size(resumed), size);
    CHECK_EQ_INT(mcts_load_options(&o, store, "nope"), TH_ENOTFOUND);
    mcts_free(whole);
    mcts_free(half);
    mcts_free(resumed);
    store_close(store);
}

/* ---- late answers on the loop, virtual loss ------------------------------------------------ */

struct late {
    struct loop *loop;
    struct mcts *t;
    int outstanding, max_outstanding, answered;
    int hold; /* 1: keep evaluations for the test to answer */
    mcts_id held[64];
    int nheld;
    mcts_id expanded[64];
    int nexpanded;
    enum mcts_stop why;
    int done_calls;
};

struct late_answer {
    struct late *l;
    mcts_id node;
};

static void late_fire(struct loop_timer *timer, void *ud)
{
    (void)timer;
    struct late_answer *a = ud;
    struct late *l = a->l;
    l->outstanding--;
    l->answered++;
    size_t len;
    const char *p = mcts_payload(l->t, a->node, &len);
    double v = (double)(hash_str(p, len) % 5) / 4.0;
    mcts_id node = a->node;
    free(a);
    mcts_evaluated(l->t, node, v, 0);
}

static void late_evaluate(struct mcts *t, mcts_id n, void *ud)
{
    struct late *l = ud;
    if (l->hold) {
        l->held[l->nheld++] = n;
        return;
    }
    struct late_answer *a = malloc(sizeof *a);
    a->l = l;
    a->node = n;
    if (++l->outstanding > l->max_outstanding)
        l->max_outstanding = l->outstanding;
    loop_timer_add(l->loop, 1 + hash_str((const char *)&n, sizeof n) % 3, late_fire, a);
    (void)t;
}

static void late_expand(struct mcts *t, mcts_id n, void *ud)
{
    struct late *l = ud;
    if (l->nexpanded < 64)
        l->expanded[l->nexpanded++] = n;
    for (unsigned i = 0; i < 3; i++) {
        char child[64];
        int m = snprintf(child, sizeof child, "%u.%u", n, i);
        mcts_add_child(t, n, 0.3, child, (size_t)m);
    }
    mcts_expanded(t, n, 0);
}

static bool late_terminal(struct mcts *t, mcts_id n, void *ud)
{
    (void)ud;
    return mcts_depth(t, n) >= 4;
}

static void late_done(struct mcts *t, enum mcts_stop why, void *ud)
{
    (void)t;
    struct late *l = ud;
    l->why = why;
    l->done_calls++;
}

static const struct mcts_callbacks late_cb = {
    .expand = late_expand,
    .evaluate = late_evaluate,
    .terminal = late_terminal,
    .done = late_done,
};

static void test_async_answers_from_loop_timers(void)
{
    struct late l = {0};
    REQUIRE(loop_new(&l.loop) == 0);
    struct mcts_options o;
    mcts_options_default(&o);
    o.max_inflight = 6;
    o.budget.iterations = 150;
    REQUIRE(mcts_new(&l.t, &o, &late_cb, &l) == 0);
    REQUIRE(mcts_run(l.t, l.loop) == 0);
    CHECK_EQ_INT(l.done_calls, 0); /* returns at once */
    CHECK_EQ_INT(loop_run(l.loop), 0);
    CHECK_EQ_INT(l.done_calls, 1);
    CHECK_EQ_INT(l.why, MCTS_STOP_ITERATIONS);
    CHECK_EQ_INT(mcts_iterations(l.t), 150);
    CHECK(l.max_outstanding > 3); /* several evaluations waited at once */
    CHECK_EQ_INT(l.outstanding, 0);
    /* each answer evaluated one node once and reached the root */
    int evaluated = 0;
    for (mcts_id n = 1; n < mcts_size(l.t); n++)
        evaluated += mcts_has_value(l.t, n);
    CHECK_EQ_INT(evaluated, l.answered);
    CHECK(l.answered > 100);
    CHECK((int)mcts_visits(l.t, 0) >= l.answered);
    for (mcts_id n = 0; n < mcts_size(l.t); n++)
        CHECK(mcts_state(l.t, n) != MCTS_PENDING);
    mcts_free(l.t);
    loop_free(l.loop);
}

/* A root with four evaluated children, one clearly better. With c = 0 every
 * selection wants that child; virtual loss sends concurrent selections
 * elsewhere while its evaluations are outstanding. */
static int vl_inflight(double virtual_loss, mcts_id expanded[4])
{
    struct late l = {.hold = 1};
    if (loop_new(&l.loop) < 0)
        return -1;
    struct mcts_options o;
    mcts_options_default(&o);
    o.c = 0;
    o.max_inflight = 4;
    o.virtual_loss = virtual_loss;
    o.budget.iterations = 100;
    if (mcts_new(&l.t, &o, &late_cb, &l) < 0)
        return -1;
    for (int i = 0; i < 4; i++) {
        mcts_id c = mcts_add_child(l.t, 0, 0.25, "x", 1);
        mcts_backup(l.t, c, i == 2 ? 0.9 : 0.5);
    }
    mcts_run(l.t, l.loop);
    loop_run(l.loop); /* starts what it can, then nothing is left to wait for */
    int n = l.nexpanded;
    for (int i = 0; i < n && i < 4; i++)
        expanded[i] = l.expanded[i];
    /* answer what was held; then stop */
    l.hold = 0;
    mcts_cancel(l.t);
    for (int i = 0; i < l.nheld; i++)
        mcts_evaluated(l.t, l.held[i], 0.5, 0);
    loop_run(l.loop);
    if (l.done_calls != 1 || l.why != MCTS_STOP_CANCELLED)
        n = -1;
    mcts_free(l.t);
    loop_free(l.loop);
    return n;
}

static void test_virtual_loss_spreads_selections(void)
{
    mcts_id expanded[4];
    CHECK_EQ_INT(vl_inflight(1.0, expanded), 4);
    for (int i = 0; i < 4; i++)
        for (int j = i + 1; j < 4; j++)
            CHECK(expanded[i] != expanded[j]);
    CHECK_EQ_INT(expanded[0], 3); /* the best child first */
    /* without virtual loss the next selections pile onto the same child,
     * whose children are all pending: only one iteration gets going */
    CHECK_EQ_INT(vl_inflight(0.0, expanded), 1);
    CHECK_EQ_INT(expanded[0], 3);
}

/* ---- finite trees, max back-up, deep synchronous runs ---------------------------------------- */

static void test_finite_tree_is_exhausted(void)
{
    struct synth s = {.width = 3, .depth = 3};
    struct mcts_options o;
    mcts_options_default(&o);
    struct mcts *t = NULL;
    REQUIRE(mcts_new(&t, &o, &synth_cb, &s) == 0);
    REQUIRE(mcts_run(t, NULL) == 0);
    CHECK_EQ_INT(mcts_stop_reason(t), MCTS_STOP_EXHAUSTED);
    CHECK_EQ_INT(mcts_size(t), 1 + 3 + 9 + 27);
    CHECK_EQ_INT(s.evaluates, 3 + 9 + 27); /* each node once */
    CHECK(mcts_complete(t, 0));
    /* leaves terminal, the rest expanded */
    for (mcts_id n = 0; n < mcts_size(t); n++)
        CHECK_EQ_INT(mcts_state(t, n) == MCTS_TERMINAL, mcts_depth(t, n) == 3);
    mcts_free(t);
}

static void test_max_backup_finds_best_leaf(void)
{
    struct synth s = {.width = 3, .depth = 4};
    struct mcts_options o;
    mcts_options_default(&o);
    o.backup = MCTS_BACKUP_MAX;
    struct mcts *t = NULL;
    REQUIRE(mcts_new(&t, &o, &synth_cb, &s) == 0);
    REQUIRE(mcts_run(t, NULL) == 0);
    mcts_id best = mcts_best(t);
    CHECK(mcts_max(t, 0) == 1.0);
    CHECK(mcts_max(t, best) == 1.0);
    /* the best node's own value is the maximum: no child of it holds it */
    for (mcts_id c = mcts_first_child(t, best); c != MCTS_NONE; c = mcts_next_sibling(t, c))
        CHECK(mcts_max(t, c) < 1.0);
    size_t len;
    const char *p = mcts_payload(t, best, &len);
    CHECK_EQ_INT(hash_str(p, len) % 5, 4);
    mcts_free(t);
}

static void test_many_synchronous_iterations(void)
{
    /* a million-node-deep trampoline would overflow the stack if answers
     * recursed into the next iteration */
    struct synth s = {.width = 2, .depth = 40};
    struct mcts_options o;
    mcts_options_default(&o);
    o.evaluate_children = false;
    o.budget.iterations = 100000;
    struct mcts *t = NULL;
    REQUIRE(mcts_new(&t, &o, &synth_cb, &s) == 0);
    REQUIRE(mcts_run(t, NULL) == 0);
    CHECK_EQ_INT(mcts_iterations(t), 100000);
    CHECK(mcts_node_bytes() < 100);
    mcts_free(t);
}

/* ---- errors ---------------------------------------------------------------------------------- */

static void nan_evaluate(struct mcts *t, mcts_id n, void *ud)
{
    (void)ud;
    mcts_evaluated(t, n, mcts_size(t) > 5 ? NAN : 0.5, 0);
}

static void failing_expand(struct mcts *t, mcts_id n, void *ud)
{
    (void)ud;
    if (n == 0) {
        flat_expand(t, n, ud);
        return;
    }
    mcts_expanded(t, n, error_set("the model said no"));
}

static void silent_evaluate(struct mcts *t, mcts_id n, void *ud)
{
    (void)t;
    (void)n;
    (void)ud;
}

static void test_callback_errors(void)
{
    struct mcts_options o;
    mcts_options_default(&o);
    struct mcts *t = NULL;
    struct mcts_callbacks cb = {.expand = flat_expand, .evaluate = nan_evaluate};
    REQUIRE(mcts_new(&t, &o, &cb, NULL) == 0);
    CHECK(mcts_run(t, NULL) < 0);
    CHECK_CONTAINS(error_message(), "not a number");
    CHECK_EQ_INT(mcts_stop_reason(t), MCTS_STOP_ERROR);
    mcts_free(t);

    cb = (struct mcts_callbacks){.expand = failing_expand, .evaluate = flat_evaluate};
    REQUIRE(mcts_new(&t, &o, &cb, NULL) == 0);
    CHECK(mcts_run(t, NULL) < 0);
    CHECK_CONTAINS(error_message(), "the model said no");
    CHECK_CONTAINS(mcts_last_error(t), "expanding node");
    mcts_free(t);

    cb = (struct mcts_callbacks){.expand = flat_expand, .evaluate = silent_evaluate};
    REQUIRE(mcts_new(&t, &o, &cb, NULL) == 0);
    CHECK(mcts_run(t, NULL) < 0);
    CHECK_CONTAINS(error_message(), "event loop");
    mcts_free(t);

    o.widen_k = 1;
    o.widen_alpha = 2;
    CHECK_EQ_INT(mcts_new(&t, &o, &synth_cb, NULL), TH_EUSAGE);
    CHECK(t == NULL);
}

/* ---- done() may free the search, with and without a loop ------------------------------------ */

static int freed_calls;
static enum mcts_stop freed_why;

static void free_on_done(struct mcts *t, enum mcts_stop why, void *ud)
{
    (void)ud;
    freed_calls++;
    freed_why = why;
    mcts_free(t);
}

static void test_done_may_free_the_search(void)
{
    struct synth s = {.width = 2, .depth = 3};
    struct mcts_callbacks cb = synth_cb;
    cb.done = free_on_done;
    struct mcts_options o;
    mcts_options_default(&o);
    o.budget.iterations = 5;
    struct mcts *t = NULL;
    REQUIRE(mcts_new(&t, &o, &cb, &s) == 0);
    freed_calls = 0;
    CHECK_EQ_INT(mcts_run(t, NULL), 0); /* t is gone when it returns */
    CHECK_EQ_INT(freed_calls, 1);
    CHECK_EQ_INT(freed_why, MCTS_STOP_ITERATIONS);

    struct loop *loop = NULL;
    REQUIRE(loop_new(&loop) == 0);
    REQUIRE(mcts_new(&t, &o, &cb, &s) == 0);
    freed_calls = 0;
    CHECK_EQ_INT(mcts_run(t, loop), 0);
    CHECK_EQ_INT(freed_calls, 0);
    CHECK_EQ_INT(loop_run(loop), 0);
    CHECK_EQ_INT(freed_calls, 1);
    CHECK_EQ_INT(freed_why, MCTS_STOP_ITERATIONS);
    loop_free(loop);
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_bandit_concentrates_on_best_arm);
    RUN(test_puct_follows_priors);
    RUN(test_widening_bounds_children);
    RUN(test_same_seed_same_tree);
    RUN(test_short_path_matches_general_selection);
    RUN(test_links_and_visits_stay_consistent);
    RUN(test_save_load_mid_search);
    RUN(test_async_answers_from_loop_timers);
    RUN(test_virtual_loss_spreads_selections);
    RUN(test_finite_tree_is_exhausted);
    RUN(test_max_backup_finds_best_leaf);
    RUN(test_many_synchronous_iterations);
    RUN(test_callback_errors);
    RUN(test_done_may_free_the_search);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    return check_summary();
}
