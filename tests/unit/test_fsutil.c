/* Tests of fsutil: tree copies that never overwrite, keep the executable
 * bit, skip __pycache__ and refuse links; atomic writes; mkdir -p. */
#include "alloc.h"
#include "buf.h"
#include "check.h"
#include "error.h"
#include "fsutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[] = "/tmp/thalamus-test-fsutil-XXXXXX";

static char *at(const char *rel)
{
    return fs_join(root, rel);
}

static void put(const char *rel, const char *text, mode_t mode)
{
    char *p = at(rel);
    char *slash = strrchr(p, '/');
    *slash = '\0';
    REQUIRE(fs_mkdir_p(p, 0755) == 0);
    *slash = '/';
    REQUIRE(fs_write_atomic(p, text, strlen(text), mode) == 0);
    free(p);
}

static char *slurp(const char *rel)
{
    char *p = at(rel);
    struct buf b;
    buf_init(&b, 0);
    int rc = buf_read_file(&b, p);
    free(p);
    if (rc < 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_detach(&b, NULL);
}

static void count_file(const char *rel, void *ud)
{
    (void)rel;
    (*(int *)ud)++;
}

static void test_copy_tree(void)
{
    put("src/a.txt", "alpha", 0644);
    put("src/sub/deeper/b.sh", "#!/bin/sh\n", 0755);
    put("src/__pycache__/x.pyc", "junk", 0644);
    int copied = 0;
    char *src = at("src"), *dst = at("dst");
    REQUIRE(fs_copy_tree(src, dst, count_file, &copied) == 0);
    CHECK_EQ_INT(copied, 2);
    char *a = slurp("dst/a.txt");
    CHECK_EQ_STR(a, "alpha");
    free(a);
    char *b = at("dst/sub/deeper/b.sh");
    struct stat st;
    CHECK(stat(b, &st) == 0 && (st.st_mode & 0100));
    free(b);
    char *cache = at("dst/__pycache__");
    CHECK(!fs_exists(cache));
    free(cache);

    /* a second copy clashes on every file and changes nothing */
    put("dst/a.txt", "changed", 0644);
    CHECK_EQ_INT(fs_copy_tree(src, dst, NULL, NULL), TH_EEXISTS);
    CHECK_CONTAINS(error_message(), "2 files would be overwritten");
    CHECK_CONTAINS(error_message(), "'a.txt'");
    CHECK_CONTAINS(error_message(), "'sub/deeper/b.sh'");
    a = slurp("dst/a.txt");
    CHECK_EQ_STR(a, "changed");
    free(a);
    free(src);
    free(dst);
}

static void test_links_refused(void)
{
    put("lsrc/ok.txt", "fine", 0644);
    char *link = at("lsrc/passwd");
    REQUIRE(symlink("/etc/passwd", link) == 0);
    free(link);
    char *src = at("lsrc"), *dst = at("ldst");
    CHECK(fs_copy_tree(src, dst, NULL, NULL) < 0);
    CHECK_CONTAINS(error_message(), "only regular files and directories");
    char *copied = at("ldst/passwd");
    CHECK(!fs_exists(copied));
    free(copied);
    free(src);
    free(dst);
}

static void test_dir_is_empty(void)
{
    char *d = at("emptiness");
    bool empty = false;
    CHECK(fs_dir_is_empty(d, NULL, &empty) == 0 && empty); /* missing counts as empty */
    put("emptiness/.git/HEAD", "ref", 0644);
    CHECK(fs_dir_is_empty(d, ".git", &empty) == 0 && empty);
    CHECK(fs_dir_is_empty(d, NULL, &empty) == 0 && !empty);
    free(d);
}

static void test_join(void)
{
    char *j = fs_join("a/", "/b");
    CHECK_EQ_STR(j, "a/b");
    free(j);
    j = fs_join("/", "x");
    CHECK_EQ_STR(j, "/x");
    free(j);
}

int main(void)
{
    if (!mkdtemp(root))
        return 1;
    RUN(test_copy_tree);
    RUN(test_links_refused);
    RUN(test_dir_is_empty);
    RUN(test_join);
    char *cmd = xasprintf("rm -rf '%s'", root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", root);
    free(cmd);
    return check_summary();
}
