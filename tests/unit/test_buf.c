/* Tests of buf (capped buffer), error (the message convention) and text
 * (typo suggestions). */
#include "buf.h"
#include "check.h"
#include "error.h"
#include "text.h"

#include <stdlib.h>

static void test_append_and_terminate(void)
{
    struct buf b;
    buf_init(&b, 0);
    CHECK_EQ_STR(buf_str(&b), "");
    CHECK_EQ_INT(buf_puts(&b, "hello"), 0);
    CHECK_EQ_INT(buf_printf(&b, ", %s %d", "world", 42), 0);
    CHECK_EQ_STR(buf_str(&b), "hello, world 42");
    CHECK_EQ_INT(b.len, 15);
    buf_reset(&b);
    CHECK_EQ_STR(buf_str(&b), "");
    buf_free(&b);
}

static void test_growth_keeps_contents(void)
{
    struct buf b;
    buf_init(&b, 0);
    for (int i = 0; i < 100000; i++)
        REQUIRE(buf_putc(&b, (char)('a' + i % 26)) == 0);
    CHECK_EQ_INT(b.len, 100000);
    int bad = 0;
    for (int i = 0; i < 100000; i++)
        bad += b.data[i] != (char)('a' + i % 26);
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(b.data[b.len], '\0');
    size_t len;
    char *p = buf_detach(&b, &len);
    CHECK_EQ_INT(len, 100000);
    CHECK(b.data == NULL && b.len == 0);
    free(p);
}

static void test_cap_refuses_and_keeps_buffer(void)
{
    struct buf b;
    buf_init(&b, 10);
    CHECK_EQ_INT(buf_puts(&b, "0123456789"), 0);
    error_clear();
    CHECK_EQ_INT(buf_putc(&b, 'x'), TH_ERR);
    CHECK_CONTAINS(error_message(), "limit of 10 bytes");
    CHECK_EQ_STR(buf_str(&b), "0123456789");
    CHECK_EQ_INT(buf_printf(&b, "%d", 1), TH_ERR);
    CHECK_EQ_INT(b.len, 10);
    buf_free(&b);

    buf_init(&b, 4);
    CHECK_EQ_INT(buf_puts(&b, "12345"), TH_ERR);
    CHECK_EQ_INT(b.len, 0);
    buf_free(&b);
}

static void test_read_file_missing(void)
{
    struct buf b;
    buf_init(&b, 0);
    CHECK_EQ_INT(buf_read_file(&b, "/nonexistent/file"), TH_ENOTFOUND);
    CHECK_CONTAINS(error_message(), "cannot open '/nonexistent/file'");
    buf_free(&b);
}

static void test_error_prefix(void)
{
    error_clear();
    CHECK_EQ_STR(error_message(), "unknown error");
    CHECK_EQ_INT(error_setc(TH_ENOTFOUND, "no such thing '%s'", "x"), TH_ENOTFOUND);
    CHECK_EQ_INT(error_prefix("cannot load '%s'", "y"), TH_ENOTFOUND);
    CHECK_EQ_STR(error_message(), "cannot load 'y': no such thing 'x'");
    CHECK_EQ_INT(error_code(), TH_ENOTFOUND);
    char big[4000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    error_set("%s", big);
    error_prefix("%s", big);
    CHECK(strlen(error_message()) < 2048);
}

static void test_suggestions(void)
{
    const char *const words[] = {"init", "config", "help", NULL};
    CHECK_EQ_STR(text_closest("ini", words), "init");
    CHECK_EQ_STR(text_closest("confg", words), "config");
    CHECK_EQ_STR(text_closest("conf", words), "config");
    CHECK(text_closest("frobnicate", words) == NULL);
    CHECK(text_closest("x", words) == NULL);
    CHECK_EQ_INT(text_edit_distance("kitten", "sitting"), 3);
    CHECK_EQ_INT(text_edit_distance("", "abc"), 3);
}

int main(void)
{
    RUN(test_append_and_terminate);
    RUN(test_growth_keeps_contents);
    RUN(test_cap_refuses_and_keeps_buffer);
    RUN(test_read_file_missing);
    RUN(test_error_prefix);
    RUN(test_suggestions);
    return check_summary();
}
