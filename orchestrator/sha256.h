/*
 * sha256: the SHA-256 hash (FIPS 180-4), for content-addressed keys such as
 * the LLM response cache's. Incremental (init, update, final) so that a key
 * can be hashed from several parts without joining them. Depends on nothing.
 */
#ifndef THALAMUS_SHA256_H
#define THALAMUS_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_HEX_SIZE 65 /* 64 hex digits and the NUL */

struct sha256 {
    uint32_t state[8];
    uint64_t bytes;
    unsigned char block[64];
    size_t fill;
};

void sha256_init(struct sha256 *h);
void sha256_update(struct sha256 *h, const void *data, size_t len);
/* Writes the 32-byte digest and leaves h to be initialised again. */
void sha256_final(struct sha256 *h, unsigned char digest[32]);

/* The lowercase hex digest of data into hex (SHA256_HEX_SIZE bytes). */
void sha256_hex(const void *data, size_t len, char hex[SHA256_HEX_SIZE]);

#endif
