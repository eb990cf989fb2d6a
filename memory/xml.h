/*
 * xml: a small pull reader for the XML that literature APIs send (arXiv's
 * Atom feeds).
 *
 * It reads the subset that data feeds use, carefully: elements with
 * attributes (single or double quoted), character data with the five
 * predefined entities and numeric character references (decimal and hex;
 * invalid code points become U+FFFD), CDATA sections, comments, processing
 * instructions and a DOCTYPE (skipped, internal subset included: no entity
 * definitions are honoured, so no entity expansion attacks). Each call to
 * xml_next() returns one event; end tags are checked against the open
 * elements, and the first error stops the reader with a message that gives
 * the line. Names are returned as written (with their prefix);
 * xml_local() strips it, which is how namespaced feeds are matched.
 * Nesting is capped at XML_MAX_DEPTH. Depends on buf, utf8 and alloc.
 */
#ifndef THALAMUS_XML_H
#define THALAMUS_XML_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

#define XML_MAX_DEPTH 256
#define XML_MAX_ATTRS 32
#define XML_MAX_NAME  128

enum xml_event {
    /* name and attributes are set, depth counts the open elements with this
     * one; <a/> gives XML_START then XML_END */
    XML_START,
    XML_END,  /* name is set; depth counts the elements still open */
    XML_TEXT, /* text holds decoded character data or a CDATA section */
    XML_EOF,
    XML_ERROR, /* error holds the message; every later call returns XML_ERROR */
};

struct xml_attr {
    char name[XML_MAX_NAME];
    char *value; /* decoded */
};

struct xml_reader {
    const char *s;
    size_t len, pos;
    long line; /* of pos */
    char name[XML_MAX_NAME];
    struct xml_attr attrs[XML_MAX_ATTRS];
    int nattrs;
    struct buf text;
    char error[256];
    char stack[XML_MAX_DEPTH][XML_MAX_NAME];
    int depth;
    bool pending_end; /* after <a/>: the XML_END still to come */
    bool failed;
};

void xml_init(struct xml_reader *x, const char *s, size_t len);
void xml_free(struct xml_reader *x);

enum xml_event xml_next(struct xml_reader *x);

/* The name without its namespace prefix: "arxiv:doi" -> "doi". */
const char *xml_local(const char *name);

/* The decoded value of the current start tag's attribute whose local name
 * is name, or NULL. */
const char *xml_attr(const struct xml_reader *x, const char *name);

/* Recovers from an error: moves to the next occurrence of "<tag" (followed
 * by a space, '>' or '/') after the current position, with the element
 * stack cut back to depth. Returns false when there is none. */
bool xml_skip_to(struct xml_reader *x, const char *tag, int depth);

#endif
