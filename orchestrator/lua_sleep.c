/*
 * lua_sleep: thalamus.sleep(seconds), which suspends the calling agent on a
 * loop timer (sleep(0) just lets everything else run and comes back on the
 * next turn of the loop), and thalamus.now() / thalamus.clock(), the wall
 * clock and a monotonic clock in seconds. Depends on agent_internal and
 * loop.
 */
#include "agent_internal.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>

#include "alloc.h"
#include "loop.h"

#define MAX_SLEEP_SECONDS (7.0 * 86400)

struct sleep_wait {
    struct agent_task *t;
    struct loop_timer *timer;
    bool fired;
};

static void sleep_release(struct agent_task *t, void *data)
{
    (void)t;
    struct sleep_wait *s = data;
    if (!s->fired)
        loop_timer_cancel(s->timer);
    free(s);
}

static void on_timer(struct loop_timer *timer, void *ud)
{
    (void)timer;
    struct sleep_wait *s = ud;
    s->fired = true;
    agent_wake(s->t);
}

static int sleep_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    agent_wait_clear(agent_task_of(L));
    return 0;
}

/* thalamus.sleep(seconds) */
static int lua_sleep(lua_State *L)
{
    double seconds = luaL_checknumber(L, 1);
    if (!(seconds >= 0 && seconds <= MAX_SLEEP_SECONDS))
        return agent_raise(L, "thalamus.sleep: seconds must be from 0 to %g, got %g",
                           MAX_SLEEP_SECONDS, seconds);
    struct agent_task *t = agent_check_current(L, "thalamus.sleep");
    struct sleep_wait *s = xcalloc(1, sizeof *s);
    s->t = t;
    s->timer = loop_timer_add(t->rt->loop, (uint64_t)llround(seconds * 1000), on_timer, s);
    return agent_wait(L, t, sleep_release, s, sleep_k, 0);
}

/* thalamus.now(): seconds since the Unix epoch, with fractions */
static int lua_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

/* thalamus.clock(): monotonic seconds, for measuring durations */
static int lua_clock(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

int luaopen_thalamus_sleep(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"sleep", lua_sleep},
        {"now", lua_now},
        {"clock", lua_clock},
        {NULL, NULL},
    };
    luaL_setfuncs(L, funcs, 0);
    return 0;
}
