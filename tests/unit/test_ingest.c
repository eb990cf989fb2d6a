/* Tests of ingest: identifiers normalise; LaTeX becomes text; the XML
 * reader decodes entities and CDATA and reports errors with their line;
 * each reader (JSON Lines, BibTeX, arXiv Atom, OpenAlex) reads the fixtures
 * in tests/fixtures/literature, reporting every malformed record with its
 * line or entry and reading the rest; duplicates merge across formats by
 * DOI, arXiv id, OpenAlex id and title; citations become links, also when
 * the cited paper arrives later. */
#include "check.h"
#include "error.h"
#include "ingest.h"
#include "memory.h"
#include "store.h"
#include "xml.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIXTURES THALAMUS_SOURCE_DIR "/tests/fixtures/literature/"

static char dir[] = "/tmp/thalamus-test-ingest-XXXXXX";

/* ---- a sink that records what the readers produce ---------------------- */

#define MAX_SEEN 32

struct seen {
    struct ingest_sink sink;
    struct ingest_record records[MAX_SEEN];
    int nrecords;
    char malformed[MAX_SEEN][300];
    int nmalformed;
};

static int seen_record(struct ingest_sink *sink, struct ingest_record *r)
{
    struct seen *s = (struct seen *)sink;
    if (s->nrecords < MAX_SEEN) { /* take the record's strings */
        s->records[s->nrecords++] = *r;
        ingest_record_init(r);
    }
    return 0;
}

static void seen_malformed(struct ingest_sink *sink, const char *where, const char *why)
{
    struct seen *s = (struct seen *)sink;
    if (s->nmalformed < MAX_SEEN)
        snprintf(s->malformed[s->nmalformed++], sizeof s->malformed[0], "%s: %s", where, why);
}

static void seen_init(struct seen *s)
{
    memset(s, 0, sizeof *s);
    s->sink.record = seen_record;
    s->sink.malformed = seen_malformed;
}

static void seen_free(struct seen *s)
{
    for (int i = 0; i < s->nrecords; i++)
        ingest_record_clear(&s->records[i]);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *s = malloc((size_t)n + 1);
    *len = fread(s, 1, (size_t)n, f);
    s[*len] = '\0';
    fclose(f);
    return s;
}

static int read_fixture(const char *name, struct seen *s)
{
    size_t len;
    char *data = slurp(name, &len);
    if (!data)
        return -100;
    int rc;
    if (strstr(name, ".jsonl"))
        rc = ingest_read_jsonl(data, len, &s->sink);
    else if (strstr(name, ".bib"))
        rc = ingest_read_bibtex(data, len, &s->sink);
    else if (strstr(name, ".xml"))
        rc = ingest_read_atom(data, len, &s->sink, NULL);
    else
        rc = ingest_read_openalex(data, len, &s->sink, NULL);
    free(data);
    return rc;
}

/* ---- identifiers and text ---------------------------------------------- */

static void check_norm(char *(*fn)(const char *), const char *in, const char *want)
{
    char *got = fn(in);
    if (want)
        CHECK_EQ_STR(got, want);
    else if (got)
        CHECK_FAIL("'%s' should not normalise, got '%s'", in, got);
    free(got);
}

static void test_identifiers(void)
{
    check_norm(ingest_normalize_doi, "https://doi.org/10.1109/CVPR.2016.90",
               "10.1109/cvpr.2016.90");
    check_norm(ingest_normalize_doi, "doi:10.1000/ABC ", "10.1000/abc");
    check_norm(ingest_normalize_doi, "http://dx.doi.org/10.1/x", "10.1/x");
    check_norm(ingest_normalize_doi, "11.1000/abc", NULL);
    check_norm(ingest_normalize_doi, "10.1000", NULL);
    check_norm(ingest_normalize_arxiv, "arXiv:1706.03762v5", "1706.03762");
    check_norm(ingest_normalize_arxiv, "http://arxiv.org/abs/2010.11929v2", "2010.11929");
    check_norm(ingest_normalize_arxiv, "https://arxiv.org/pdf/2101.00001.pdf", "2101.00001");
    check_norm(ingest_normalize_arxiv, "10.48550/arXiv.1607.06450", "1607.06450");
    check_norm(ingest_normalize_arxiv, "http://arxiv.org/abs/hep-th/9901001v1", "hep-th/9901001");
    check_norm(ingest_normalize_arxiv, "math.GT/0309136", "math.GT/0309136");
    check_norm(ingest_normalize_arxiv, "1706.037", NULL);
    check_norm(ingest_normalize_arxiv, "not an id", NULL);
    check_norm(ingest_normalize_openalex, "https://openalex.org/W2741809807", "W2741809807");
    check_norm(ingest_normalize_openalex, "A123", NULL);
    check_norm(ingest_title_key, "Attention Is {All} You Need!", "attention is all you need");
    check_norm(ingest_title_key, "  M\xc3\xbcller's -- \xc3\x89tude  ",
               "m\xc3\xbcller s \xc3\x89tude");
    check_norm(ingest_ref_key, "10.48550/arXiv.1706.03762", "arxiv:1706.03762");
    check_norm(ingest_ref_key, "10.1109/CVPR.2016.90", "doi:10.1109/cvpr.2016.90");
    check_norm(ingest_ref_key, "https://openalex.org/W1", "openalex:W1");
    check_norm(ingest_ref_key, "see the appendix", NULL);
}

static void check_latex(const char *in, const char *want)
{
    char *got = ingest_latex_to_text(in, strlen(in));
    CHECK_EQ_STR(got, want);
    free(got);
}

static void test_latex_to_text(void)
{
    check_latex("M{\\\"u}ller", "M\xc3\xbcller");
    check_latex("{\\'E}tude na\\\"{\\i}ve", "\xc3\x89tude na\xc3\xafve");
    check_latex("Gar{\\c{c}}{\\~a}o \\v{S}koda \\ss{} \\o",
                "Gar\xc3\xa7\xc3\xa3o \xc5\xa0koda \xc3\x9f \xc3\xb8");
    check_latex("ML \\& Stats, 50\\% -- faster", "ML & Stats, 50% \xe2\x80\x93 faster");
    check_latex("\\emph{new}  {B}ayes~rule", "new Bayes rule");
    check_latex("$O(n \\log n)$", "O(n n)");
    check_latex("\\'q unknown pair", "q unknown pair");
}

/* ---- XML ------------------------------------------------------------------ */

static void test_xml_reader(void)
{
    const char *doc = "<?xml version=\"1.0\"?>\n<!DOCTYPE r [<!ENTITY x \"boom\">]>\n"
                      "<r a='1 &amp; 2'><p:t>caf&#233; &lt;&#x41;&gt;</p:t><e/>"
                      "<![CDATA[<raw> & stuff]]><!-- note --></r>\n";
    struct xml_reader x;
    xml_init(&x, doc, strlen(doc));
    REQUIRE(xml_next(&x) == XML_START);
    CHECK_EQ_STR(x.name, "r");
    CHECK_EQ_STR(xml_attr(&x, "a"), "1 & 2");
    REQUIRE(xml_next(&x) == XML_START);
    CHECK_EQ_STR(xml_local(x.name), "t");
    REQUIRE(xml_next(&x) == XML_TEXT);
    CHECK_EQ_STR(buf_str(&x.text), "caf\xc3\xa9 <A>");
    REQUIRE(xml_next(&x) == XML_END);
    REQUIRE(xml_next(&x) == XML_START);
    CHECK_EQ_STR(x.name, "e");
    REQUIRE(xml_next(&x) == XML_END);
    REQUIRE(xml_next(&x) == XML_TEXT);
    CHECK_EQ_STR(buf_str(&x.text), "<raw> & stuff");
    REQUIRE(xml_next(&x) == XML_END);
    CHECK_EQ_INT(xml_next(&x), XML_EOF);
    xml_free(&x);

    const char *bad[][2] = {
        {"<a>\n<b>\n</a>", "line 3: the end tag </a> does not match <b>"},
        {"<a>&nbsp;</a>", "unknown entity '&nbsp;'"},
        {"<a>x", "the input ended inside <a>"},
        {"<a b=c></a>", "is not quoted"},
        {"<a>&#xZZ;</a>", "malformed character reference"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        xml_init(&x, bad[i][0], strlen(bad[i][0]));
        enum xml_event ev;
        while ((ev = xml_next(&x)) != XML_EOF && ev != XML_ERROR)
            ;
        CHECK_EQ_INT(ev, XML_ERROR);
        CHECK_CONTAINS(x.error, bad[i][1]);
        xml_free(&x);
    }
}

/* ---- the readers ------------------------------------------------------------ */

static void test_jsonl_reader(void)
{
    struct seen s;
    seen_init(&s);
    REQUIRE(read_fixture(FIXTURES "papers.jsonl", &s) == 0);
    CHECK_EQ_INT(s.nrecords, 5);
    CHECK_EQ_INT(s.nmalformed, 4);
    CHECK_EQ_STR(s.malformed[0], "line 4: not valid JSON");
    CHECK_EQ_STR(s.malformed[1], "line 5: no title");
    CHECK_EQ_STR(s.malformed[2], "line 6: year must be a four-digit year");
    CHECK_EQ_STR(s.malformed[3], "line 9: not a JSON object");
    REQUIRE(s.nrecords == 5);
    const struct ingest_record *r = &s.records[0];
    CHECK_EQ_STR(r->title, "Attention Is All You Need");
    CHECK_EQ_INT(r->nauthors, 2);
    CHECK_EQ_INT(r->year, 2017);
    CHECK_EQ_STR(r->doi, "10.5555/3295222.3295349");
    CHECK_EQ_STR(r->arxiv_id, "1706.03762"); /* from the arXiv URL */
    CHECK_EQ_STR(r->where, "line 1");
    r = &s.records[1];
    CHECK_EQ_INT(r->nauthors, 4); /* "A and B and C and D" */
    CHECK(r->nauthors == 4 && !strcmp(r->authors[3], "Jian Sun"));
    CHECK_EQ_INT(r->year, 2016);
    r = &s.records[2];
    CHECK_EQ_STR(r->arxiv_id, "1607.06450");
    CHECK_EQ_INT(r->nrefs, 2);
    CHECK(r->nrefs == 2 && !strcmp(r->refs[0], "doi:10.1109/cvpr.2016.90") &&
          !strcmp(r->refs[1], "arxiv:1706.03762"));
    CHECK_EQ_STR(s.records[4].title, "Caf\xc3\xa9 of invalid \xef\xbf\xbd bytes");
    seen_free(&s);
}

static void test_bibtex_reader(void)
{
    struct seen s;
    seen_init(&s);
    REQUIRE(read_fixture(FIXTURES "refs.bib", &s) == 0);
    CHECK_EQ_INT(s.nrecords, 3);
    CHECK_EQ_INT(s.nmalformed, 3);
    CHECK_CONTAINS(s.malformed[0], "entry 'broken2019' (line 27)");
    CHECK_CONTAINS(s.malformed[0], "unbalanced braces");
    CHECK_EQ_STR(s.malformed[1], "entry 'notitle2021' (line 32): no title");
    CHECK_CONTAINS(s.malformed[2], "entry 'missingequals' (line 37)");
    CHECK_CONTAINS(s.malformed[2], "expected '=' after the field 'title'");
    REQUIRE(s.nrecords == 3);
    const struct ingest_record *r = &s.records[0];
    CHECK_EQ_STR(r->title, "Attention is All you Need");
    CHECK_EQ_INT(r->nauthors, 3); /* "and others" is dropped */
    CHECK(r->nauthors == 3 && !strcmp(r->authors[0], "Ashish Vaswani"));
    CHECK_EQ_STR(r->venue, "Advances in Neural Information Processing Systems 30");
    CHECK_EQ_INT(r->year, 2017);
    CHECK_EQ_STR(r->arxiv_id, "1706.03762");
    CHECK_EQ_STR(r->where, "entry 'vaswani2017' (line 9)");
    r = &s.records[1];
    CHECK_EQ_STR(r->title,
                 "M\xc3\xbcller's \xc3\x89tude on na\xc3\xafve Bayes \xe2\x80\x93 revisited");
    CHECK(r->nauthors == 2 && !strcmp(r->authors[0], "J\xc3\xb6rg M\xc3\xbcller") &&
          !strcmp(r->authors[1], "Jo\xc3\xa3o Gar\xc3\xa7\xc3\xa3o"));
    CHECK_EQ_STR(r->venue, "Journal of ML & Stats");
    CHECK_EQ_STR(r->doi, "10.1000/jmls.2020.001");
    CHECK_EQ_STR(r->abstract, "We revisit na\xc3\xafve Bayes with new priors.");
    CHECK_EQ_STR(s.records[2].title, "Parentheses Work Too");
    CHECK_EQ_INT(s.records[2].year, 2018);
    seen_free(&s);

    /* a file cut in the middle of an entry: the entries before it survive */
    const char *cut = "@article{a, title={First}}\n@article{b, title={Second";
    seen_init(&s);
    REQUIRE(ingest_read_bibtex(cut, strlen(cut), &s.sink) == 0);
    CHECK_EQ_INT(s.nrecords, 1);
    CHECK_EQ_INT(s.nmalformed, 1);
    seen_free(&s);
}

static void test_atom_reader(void)
{
    struct seen s;
    seen_init(&s);
    REQUIRE(read_fixture(FIXTURES "arxiv.xml", &s) == 0);
    size_t len;
    char *feed = slurp(FIXTURES "arxiv.xml", &len);
    struct seen again;
    seen_init(&again);
    long total = 0;
    REQUIRE(feed && ingest_read_atom(feed, len, &again.sink, &total) == 0);
    CHECK_EQ_INT(total, 5);
    seen_free(&again);
    free(feed);
    CHECK_EQ_INT(s.nrecords, 3);
    CHECK_EQ_INT(s.nmalformed, 2);
    CHECK_CONTAINS(s.malformed[0], "entry 3 (2101.00001) (line 31): no title");
    CHECK_CONTAINS(s.malformed[1], "entry 4 (line 35): malformed XML: line 37: the end tag "
                                   "</title> does not match <b>");
    REQUIRE(s.nrecords == 3);
    const struct ingest_record *r = &s.records[0];
    CHECK_EQ_STR(r->title, "Attention Is All You Need");
    CHECK_EQ_STR(r->arxiv_id, "1706.03762");
    CHECK_EQ_INT(r->year, 2017);
    CHECK_EQ_INT(r->nauthors, 2);
    CHECK_EQ_STR(r->url, "http://arxiv.org/abs/1706.03762v7");
    CHECK_CONTAINS(r->abstract, "convolutional neural networks & attention.");
    r = &s.records[1];
    CHECK_EQ_STR(r->title, "An Image is Worth 16x16 Words: Transformers for Image Recognition "
                           "at Scale \xe2\x80\x94 ViT");
    CHECK_EQ_STR(r->abstract, "While the Transformer <architecture> has become the de-facto "
                              "standard for NLP <tasks> in caf\xc3\xa9s.");
    CHECK_EQ_STR(r->doi, "10.1000/vit.2021");
    CHECK_EQ_STR(r->venue, "ICLR 2021");
    CHECK_EQ_STR(s.records[2].arxiv_id, "hep-th/9901001");
    seen_free(&s);

    /* arXiv's error reply is an error with its message */
    const char *err = "<feed xmlns=\"http://www.w3.org/2005/Atom\"><entry>"
                      "<id>http://arxiv.org/api/errors#incorrect_id_format</id>"
                      "<title>Error</title><summary>incorrect id format for 1234</summary>"
                      "</entry></feed>";
    seen_init(&s);
    CHECK(ingest_read_atom(err, strlen(err), &s.sink, NULL) < 0);
    CHECK_CONTAINS(error_message(), "arXiv reported an error: incorrect id format for 1234");
    seen_free(&s);
    /* not a feed at all */
    seen_init(&s);
    CHECK(ingest_read_atom("<html><body/></html>", 20, &s.sink, NULL) < 0);
    CHECK_CONTAINS(error_message(), "not an Atom feed");
    seen_free(&s);
}

static void test_openalex_reader(void)
{
    struct seen s;
    seen_init(&s);
    REQUIRE(read_fixture(FIXTURES "openalex.json", &s) == 0);
    CHECK_EQ_INT(s.nrecords, 2);
    CHECK_EQ_INT(s.nmalformed, 1);
    CHECK_EQ_STR(s.malformed[0], "result 3 (W3000000003): no title");
    REQUIRE(s.nrecords == 2);
    const struct ingest_record *r = &s.records[0];
    CHECK_EQ_STR(r->openalex_id, "W2963403868");
    CHECK_EQ_STR(r->arxiv_id, "1706.03762");
    CHECK_EQ_STR(r->abstract,
                 "The dominant sequence transduction models are based on attention attention.");
    CHECK_EQ_STR(r->venue, "arXiv (Cornell University)");
    CHECK(r->nrefs == 2 && !strcmp(r->refs[0], "openalex:W2194775991"));
    CHECK_EQ_STR(s.records[1].doi, "10.1109/cvpr.2016.90");
    seen_free(&s);
    seen_init(&s);
    CHECK(ingest_read_openalex("{\"error\": \"bad\"}", 16, &s.sink, NULL) < 0);
    CHECK_CONTAINS(error_message(), "no \"results\" list");
    seen_free(&s);
}

static void test_format_guess(void)
{
    CHECK_EQ_INT(ingest_format_guess("x.bib", "", 0), INGEST_BIBTEX);
    CHECK_EQ_INT(ingest_format_guess("x.jsonl", "", 0), INGEST_JSONL);
    CHECK_EQ_INT(ingest_format_guess("feed", "  <?xml", 7), INGEST_ATOM);
    CHECK_EQ_INT(ingest_format_guess("refs", "\n@article{", 10), INGEST_BIBTEX);
    CHECK_EQ_INT(ingest_format_guess("page", "{\"meta\": {}, \"results\": []}", 27),
                 INGEST_OPENALEX);
    CHECK_EQ_INT(ingest_format_guess("data", "{\"title\": \"x\"}\n", 15), INGEST_JSONL);
}

/* ---- into memory ------------------------------------------------------------ */

struct mem {
    struct store *store;
    struct memory *m;
};

static void mem_open(struct mem *f, const char *name)
{
    char path[300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
    store_reset_migrations();
    memory_register_migrations();
    REQUIRE(store_open(&f->store, path) == 0);
    REQUIRE(memory_new(&f->m, f->store, NULL) == 0);
}

static void mem_close(struct mem *f)
{
    memory_free(f->m);
    store_close(f->store);
}

static int count(struct mem *f, const char *sql)
{
    sqlite3_stmt *st;
    int v = -1;
    if (sqlite3_prepare_v2(f->store->db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

static struct ingest_counts ingest(struct mem *f, const char *file)
{
    struct ingest_session *s = NULL;
    struct ingest_counts c = {0};
    if (ingest_session_new(&s, f->m, file) < 0)
        return c;
    int rc = ingest_file(s, file, INGEST_AUTO);
    if (rc < 0)
        fprintf(stderr, "  ingest: %s\n", error_message());
    c = *ingest_session_counts(s);
    ingest_session_free(s, rc);
    return c;
}

static void test_store_and_merge(void)
{
    struct mem f;
    mem_open(&f, "merge.db");
    struct ingest_counts c = ingest(&f, FIXTURES "papers.jsonl");
    CHECK_EQ_INT(c.added, 4);
    CHECK_EQ_INT(c.merged, 1); /* "attention is all you need!" by title */
    CHECK_EQ_INT(c.skipped, 4);
    CHECK_EQ_INT(c.links, 2); /* Layer Norm cites ResNet (DOI) and the Transformer (arXiv) */
    CHECK_EQ_INT(count(&f, "SELECT count(*) FROM memory_items WHERE kind = 'paper'"), 4);
    /* the merge kept the title and took the longer abstract */
    CHECK_EQ_INT(count(&f, "SELECT count(*) FROM memory_items WHERE title = 'Attention Is All "
                           "You Need' AND text LIKE 'The dominant sequence%'"),
                 1);

    /* the same papers in BibTeX, Atom and OpenAlex form merge into them */
    c = ingest(&f, FIXTURES "refs.bib");
    CHECK_EQ_INT(c.added, 2);  /* Mueller, Parentheses */
    CHECK_EQ_INT(c.merged, 1); /* vaswani2017 by arXiv id */
    CHECK_EQ_INT(c.skipped, 3);
    c = ingest(&f, FIXTURES "arxiv.xml");
    CHECK_EQ_INT(c.added, 2);  /* ViT, the old-style id */
    CHECK_EQ_INT(c.merged, 1); /* 1706.03762 */
    c = ingest(&f, FIXTURES "openalex.json");
    CHECK_EQ_INT(c.added, 0);
    CHECK_EQ_INT(c.merged, 2); /* by arXiv id, and by DOI */
    CHECK_EQ_INT(c.skipped, 1);
    CHECK_EQ_INT(c.links, 1); /* the Transformer cites ResNet (W2194775991) */
    CHECK_EQ_INT(count(&f, "SELECT count(*) FROM memory_items"), 8);
    CHECK_EQ_INT(count(&f, "SELECT count(*) FROM memory_items WHERE title LIKE 'Attention%'"), 1);
    /* the merged item gathered its identifiers from every source */
    CHECK_EQ_INT(count(&f, "SELECT count(*) FROM memory_keys k JOIN memory_items i ON i.id = "
                           "k.item_id WHERE i.title = 'Attention Is All You Need'"),
                 4); /* doi, arxiv, openalex, title */
    /* the unknown W9999999999 waits for its paper */
    CHECK_EQ_INT(count(&f, "SELECT count(*) FROM memory_refs WHERE key = "
                           "'openalex:W9999999999'"),
                 1);
    /* a reingest changes nothing */
    c = ingest(&f, FIXTURES "papers.jsonl");
    CHECK_EQ_INT(c.added, 0);
    CHECK_EQ_INT(count(&f, "SELECT count(*) FROM memory_items"), 8);
    /* authors are searchable */
    struct memory_recall_options o = {.query = "Dosovitskiy", .k = 3, .no_touch = true};
    struct memory_hit *hits;
    size_t n;
    REQUIRE(memory_recall(f.m, &o, &hits, &n) == 0);
    CHECK(n >= 1 && strstr(hits[0].item.title, "16x16"));
    memory_hits_free(hits, n);
    mem_close(&f);
}

static void test_citation_arrives_later(void)
{
    struct mem f;
    mem_open(&f, "later.db");
    const char *citing = "{\"title\": \"A citing paper about things\", \"references\": "
                         "[\"10.1/later\"]}\n";
    const char *cited = "{\"title\": \"The cited paper arrives later\", \"doi\": \"10.1/LATER\"}\n";
    struct ingest_session *s;
    REQUIRE(ingest_session_new(&s, f.m, "test") == 0);
    REQUIRE(ingest_read_jsonl(citing, strlen(citing), ingest_session_sink(s)) == 0);
    REQUIRE(ingest_session_free(s, 0) == 0);
    CHECK_EQ_INT(count(&f, "SELECT count(*) FROM memory_links"), 0);
    CHECK_EQ_INT(count(&f, "SELECT count(*) FROM memory_refs"), 1);
    REQUIRE(ingest_session_new(&s, f.m, "test") == 0);
    REQUIRE(ingest_read_jsonl(cited, strlen(cited), ingest_session_sink(s)) == 0);
    CHECK_EQ_INT(ingest_session_counts(s)->links, 1);
    REQUIRE(ingest_session_free(s, 0) == 0);
    CHECK_EQ_INT(count(&f, "SELECT count(*) FROM memory_links WHERE type = 'cites'"), 1);
    CHECK_EQ_INT(count(&f, "SELECT count(*) FROM memory_refs"), 0);
    mem_close(&f);
}

static void test_unreadable_inputs(void)
{
    struct mem f;
    mem_open(&f, "bad.db");
    struct ingest_session *s;
    REQUIRE(ingest_session_new(&s, f.m, "test") == 0);
    CHECK(ingest_file(s, "/nonexistent/refs.bib", INGEST_AUTO) < 0);
    CHECK_CONTAINS(error_message(), "cannot open '/nonexistent/refs.bib'");
    /* binary junk as JSON Lines: every line is reported, nothing crashes */
    char junk[4096];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)((i * 7919) & 0xff);
    struct seen seen;
    seen_init(&seen);
    CHECK(ingest_read_jsonl(junk, sizeof junk, &seen.sink) == 0);
    CHECK_EQ_INT(seen.nrecords, 0);
    CHECK(seen.nmalformed > 0);
    seen_free(&seen);
    seen_init(&seen);
    CHECK(ingest_read_bibtex(junk, sizeof junk, &seen.sink) == 0);
    CHECK_EQ_INT(seen.nrecords, 0);
    seen_free(&seen);
    seen_init(&seen);
    CHECK(ingest_read_atom(junk, sizeof junk, &seen.sink, NULL) < 0);
    seen_free(&seen);
    ingest_session_free(s, 0);
    mem_close(&f);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    RUN(test_identifiers);
    RUN(test_latex_to_text);
    RUN(test_xml_reader);
    RUN(test_jsonl_reader);
    RUN(test_bibtex_reader);
    RUN(test_atom_reader);
    RUN(test_openalex_reader);
    RUN(test_format_guess);
    RUN(test_store_and_merge);
    RUN(test_citation_arrives_later);
    RUN(test_unreadable_inputs);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    return check_summary();
}
