/* Tests of cli: long and short options, values in both spellings, "--",
 * and usage errors with suggestions. */
#include "check.h"
#include "cli.h"
#include "error.h"

#include <stdlib.h>

static const struct cli_option opts[] = {
    {"template", 't', "NAME", "template"},
    {"force", 'f', NULL, "force"},
    {"jobs", 'j', "N", "jobs"},
    {"json", 0, NULL, "json"},
    {NULL, 0, NULL, NULL},
};

static int parse(struct cli_args *a, int argc, char **argv)
{
    return cli_parse(opts, argc, argv, a);
}

static void test_long_and_short(void)
{
    char *argv[] = {"dir", "--template", "x", "-f", "--jobs=3", "more"};
    struct cli_args a;
    REQUIRE(parse(&a, 6, argv) == 0);
    CHECK_EQ_STR(cli_value(opts, &a, "template"), "x");
    CHECK(cli_flag(opts, &a, "force"));
    CHECK_EQ_STR(cli_value(opts, &a, "jobs"), "3");
    CHECK(!cli_flag(opts, &a, "json"));
    CHECK_EQ_INT(a.npositional, 2);
    CHECK_EQ_STR(a.positional[0], "dir");
    CHECK_EQ_STR(a.positional[1], "more");
    free(a.positional);
}

static void test_grouped_and_attached(void)
{
    char *argv[] = {"-fj4", "-tname"};
    struct cli_args a;
    REQUIRE(parse(&a, 2, argv) == 0);
    CHECK(cli_flag(opts, &a, "force"));
    CHECK_EQ_STR(cli_value(opts, &a, "jobs"), "4");
    CHECK_EQ_STR(cli_value(opts, &a, "template"), "name");
    free(a.positional);
}

static void test_double_dash(void)
{
    char *argv[] = {"--force", "--", "--json", "-x"};
    struct cli_args a;
    REQUIRE(parse(&a, 4, argv) == 0);
    CHECK(!cli_flag(opts, &a, "json"));
    CHECK_EQ_INT(a.npositional, 2);
    CHECK_EQ_STR(a.positional[0], "--json");
    free(a.positional);
}

static void test_usage_errors(void)
{
    struct cli_args a;
    char *typo[] = {"--forse"};
    CHECK_EQ_INT(parse(&a, 1, typo), TH_EUSAGE);
    CHECK_EQ_STR(error_message(), "unknown option '--forse'; did you mean '--force'?");
    char *unknown[] = {"--zebra"};
    CHECK_EQ_INT(parse(&a, 1, unknown), TH_EUSAGE);
    CHECK_EQ_STR(error_message(), "unknown option '--zebra'");
    char *missing[] = {"--template"};
    CHECK_EQ_INT(parse(&a, 1, missing), TH_EUSAGE);
    CHECK_EQ_STR(error_message(), "option '--template' needs a value (NAME)");
    char *novalue[] = {"--force=yes"};
    CHECK_EQ_INT(parse(&a, 1, novalue), TH_EUSAGE);
    CHECK_EQ_STR(error_message(), "option '--force' takes no value");
    char *shortbad[] = {"-z"};
    CHECK_EQ_INT(parse(&a, 1, shortbad), TH_EUSAGE);
    long n;
    CHECK_EQ_INT(cli_positive_int("jobs", "two", &n), TH_EUSAGE);
    CHECK_EQ_STR(error_message(), "option '--jobs' needs a positive integer, got 'two'");
    CHECK(cli_positive_int("jobs", "12", &n) == 0 && n == 12);
}

int main(void)
{
    RUN(test_long_and_short);
    RUN(test_grouped_and_attached);
    RUN(test_double_dash);
    RUN(test_usage_errors);
    return check_summary();
}
