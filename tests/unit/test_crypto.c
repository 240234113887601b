/*
 * test_crypto.c — unit tests for common/crypto.c: SHA-256 and base64 known
 * vectors, hex codec, constant-time compare, tokens, RNG across fork.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crypto.h"
#include "err.h"
#include "wp_test.h"

WP_TEST(sha256_vectors)
{
    char hex[65];
    WP_CHECK_EQ(wp_sha256_hex("abc", 3, hex), 0);
    WP_CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    WP_CHECK_EQ(wp_sha256_hex("", 0, hex), 0);
    WP_CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    WP_CHECK_EQ(wp_sha256_hex(m, strlen(m), hex), 0);
    WP_CHECK_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    uint8_t d[32];
    wp_sha256("abc", 3, d);
    WP_CHECK_EQ(d[0], 0xba);
    WP_CHECK_EQ(d[31], 0xad);
}

WP_TEST(base64_rfc4648_vectors)
{
    static const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *std[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    static const char *url[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    char out[32];
    uint8_t dec[32];
    size_t olen = 99;
    for (size_t i = 0; i < 7; i++) {
        size_t n = strlen(in[i]);
        WP_CHECK_EQ(wp_base64_encode(in[i], n, out, sizeof out, &olen), 0);
        WP_CHECK_STR(out, std[i]);
        WP_CHECK_EQ(olen, strlen(std[i]));
        WP_CHECK_EQ(wp_base64_encoded_len(n), strlen(std[i]));
        WP_CHECK_EQ(wp_base64url_encode(in[i], n, out, sizeof out, &olen), 0);
        WP_CHECK_STR(out, url[i]);
        WP_CHECK_EQ(wp_base64url_encoded_len(n), strlen(url[i]));
        WP_CHECK_EQ(wp_base64_decode(std[i], strlen(std[i]), dec, sizeof dec, &olen), 0);
        WP_CHECK_EQ(olen, n);
        WP_CHECK(memcmp(dec, in[i], n) == 0);
        WP_CHECK_EQ(wp_base64url_decode(url[i], strlen(url[i]), dec, sizeof dec, &olen), 0);
        WP_CHECK_EQ(olen, n);
        WP_CHECK(memcmp(dec, in[i], n) == 0);
    }
    /* alphabet differences */
    static const uint8_t hi[] = {0xfb, 0xff, 0xbf};
    WP_CHECK_EQ(wp_base64_encode(hi, 3, out, sizeof out, NULL), 0);
    WP_CHECK_STR(out, "+/+/");
    WP_CHECK_EQ(wp_base64url_encode(hi, 3, out, sizeof out, NULL), 0);
    WP_CHECK_STR(out, "-_-_");
    WP_CHECK_EQ(wp_base64url_decode("+/+/", 4, dec, sizeof dec, NULL), WP_ERR_MALFORMED);
    WP_CHECK_EQ(wp_base64_decode("-_-_", 4, dec, sizeof dec, NULL), WP_ERR_MALFORMED);
}

WP_TEST(base64_malformed_and_limits)
{
    uint8_t dec[16];
    char out[16];
    static const char *bad_std[] = {"Zg=",  "Zg",   "Zg===", "Z===",   "====", "Zm9v=", "Zm=v",
                                    "Zh==", "Zm9=", "Zm 9v", "Zm9v\n", "Z@9v", "=Zm9"};
    for (size_t i = 0; i < sizeof bad_std / sizeof bad_std[0]; i++) {
        int rc = wp_base64_decode(bad_std[i], strlen(bad_std[i]), dec, sizeof dec, NULL);
        WP_CHECK_EQ(rc, WP_ERR_MALFORMED);
        if (rc != WP_ERR_MALFORMED)
            printf("  accepted: \"%s\"\n", bad_std[i]);
    }
    static const char *bad_url[] = {"Z", "Zg==", "Zh", "Zm9", "Zm9vY", "Zm+v", "AAA\0"};
    for (size_t i = 0; i < sizeof bad_url / sizeof bad_url[0]; i++) {
        size_t n = strlen(bad_url[i]) + (i == 6 ? 1 : 0);
        WP_CHECK_EQ(wp_base64url_decode(bad_url[i], n, dec, sizeof dec, NULL), WP_ERR_MALFORMED);
    }
    /* cap too small */
    WP_CHECK_EQ(wp_base64_decode("Zm9vYmFy", 8, dec, 5, NULL), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_base64_decode("Zm9vYmFy", 8, dec, 6, NULL), 0);
    WP_CHECK_EQ(wp_base64_encode("foobar", 6, out, 8, NULL), WP_ERR_LIMIT); /* no NUL room */
    WP_CHECK_EQ(wp_base64_encode("foobar", 6, out, 9, NULL), 0);
    WP_CHECK_EQ(wp_base64url_encode("fo", 2, out, 3, NULL), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_base64url_encode("fo", 2, out, 4, NULL), 0);
    WP_CHECK_EQ(wp_base64_encode("x", SIZE_MAX, out, sizeof out, NULL), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_base64_encoded_len(SIZE_MAX), SIZE_MAX);
}

WP_TEST(base64_roundtrip_random)
{
    uint8_t src[300], dec[300];
    char enc[512];
    for (size_t n = 0; n < sizeof src; n += 7) {
        WP_CHECK_EQ(wp_random_bytes(src, n), 0);
        size_t el = 0, dl = 0;
        WP_CHECK_EQ(wp_base64_encode(src, n, enc, sizeof enc, &el), 0);
        WP_CHECK_EQ(wp_base64_decode(enc, el, dec, sizeof dec, &dl), 0);
        WP_CHECK(dl == n && memcmp(src, dec, n) == 0);
        WP_CHECK_EQ(wp_base64url_encode(src, n, enc, sizeof enc, &el), 0);
        WP_CHECK(strchr(enc, '=') == NULL);
        WP_CHECK_EQ(wp_base64url_decode(enc, el, dec, sizeof dec, &dl), 0);
        WP_CHECK(dl == n && memcmp(src, dec, n) == 0);
    }
}

WP_TEST(hex_codec)
{
    static const uint8_t b[] = {0x00, 0x01, 0xab, 0xff, 0x7f};
    char hex[11];
    uint8_t dec[8];
    size_t olen = 0;
    WP_CHECK_EQ(wp_hex_encode(b, 5, hex, sizeof hex), 0);
    WP_CHECK_STR(hex, "0001abff7f");
    WP_CHECK_EQ(wp_hex_encode(b, 5, hex, 10), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_hex_encode(b, 0, hex, 1), 0);
    WP_CHECK_STR(hex, "");
    WP_CHECK_EQ(wp_hex_encode(b, SIZE_MAX / 2 + 1, hex, sizeof hex), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_hex_decode("0001ABff7F", 10, dec, sizeof dec, &olen), 0);
    WP_CHECK_EQ(olen, 5);
    WP_CHECK(memcmp(dec, b, 5) == 0);
    WP_CHECK_EQ(wp_hex_decode("000", 3, dec, sizeof dec, &olen), WP_ERR_MALFORMED);
    WP_CHECK_EQ(wp_hex_decode("0g", 2, dec, sizeof dec, &olen), WP_ERR_MALFORMED);
    WP_CHECK_EQ(wp_hex_decode("0 ", 2, dec, sizeof dec, &olen), WP_ERR_MALFORMED);
    WP_CHECK_EQ(wp_hex_decode("0\0", 2, dec, sizeof dec, &olen), WP_ERR_MALFORMED);
    WP_CHECK_EQ(wp_hex_decode("0x", 2, dec, sizeof dec, &olen), WP_ERR_MALFORMED);
    WP_CHECK_EQ(wp_hex_decode("0001abff7f", 10, dec, 4, &olen), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_hex_decode("", 0, dec, 0, &olen), 0);
    WP_CHECK_EQ(olen, 0);
}

WP_TEST(ct_compare)
{
    WP_CHECK_EQ(wp_ct_equal("abcd", "abcd", 4), 1);
    WP_CHECK_EQ(wp_ct_equal("abcd", "abce", 4), 0);
    WP_CHECK_EQ(wp_ct_equal("xbcd", "abcd", 4), 0);
    WP_CHECK_EQ(wp_ct_equal("a", "b", 0), 1);
    uint8_t x[64], y[64];
    memset(x, 0x55, sizeof x);
    memcpy(y, x, sizeof y);
    y[63] ^= 0x80;
    WP_CHECK_EQ(wp_ct_equal(x, y, 64), 0);
    WP_CHECK_EQ(wp_ct_equal(x, y, 63), 1);
    WP_CHECK_EQ(wp_ct_streq("token", "token"), 1);
    WP_CHECK_EQ(wp_ct_streq("token", "tokem"), 0);
    WP_CHECK_EQ(wp_ct_streq("token", "token2"), 0);
    WP_CHECK_EQ(wp_ct_streq("token2", "token"), 0);
    WP_CHECK_EQ(wp_ct_streq("", ""), 1);
    WP_CHECK_EQ(wp_ct_streq("", "a"), 0);
    WP_CHECK_EQ(wp_ct_streq(NULL, "a"), 0);
    WP_CHECK_EQ(wp_ct_streq("a", NULL), 0);
}

static int token_charset_ok(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_'))
            return 0;
    return 1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

WP_TEST(token_generate)
{
    enum { N = 1000 };
    char(*toks)[64] = calloc(N, sizeof *toks);
    WP_CHECK(toks != NULL);
    if (!toks)
        return;
    for (int i = 0; i < N; i++) {
        WP_CHECK_EQ(wp_token_generate("wpa", toks[i], sizeof toks[i]), 0);
        WP_CHECK_EQ(strlen(toks[i]), 4 + WP_TOKEN_RANDOM_LEN);
        WP_CHECK(strncmp(toks[i], "wpa_", 4) == 0);
        WP_CHECK(token_charset_ok(toks[i] + 4));
        uint8_t raw[33];
        size_t rl = 0;
        WP_CHECK_EQ(wp_base64url_decode(toks[i] + 4, WP_TOKEN_RANDOM_LEN, raw, sizeof raw, &rl), 0);
        WP_CHECK_EQ(rl, 32);
    }
    qsort(toks, N, sizeof *toks, cmp_str);
    int dups = 0;
    for (int i = 1; i < N; i++)
        dups += strcmp(toks[i - 1], toks[i]) == 0;
    WP_CHECK_EQ(dups, 0);
    free(toks);

    char t[64];
    WP_CHECK_EQ(wp_token_generate(NULL, t, sizeof t), 0);
    WP_CHECK_EQ(strlen(t), WP_TOKEN_RANDOM_LEN);
    WP_CHECK(token_charset_ok(t));
    WP_CHECK_EQ(wp_token_generate("", t, sizeof t), 0);
    WP_CHECK_EQ(strlen(t), WP_TOKEN_RANDOM_LEN);
    /* exact capacity: prefix + '_' + 43 + NUL */
    WP_CHECK_EQ(wp_token_generate("wpn", t, 3 + 1 + 43 + 1), 0);
    WP_CHECK_EQ(wp_token_generate("wpn", t, 3 + 1 + 43), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_token_generate(NULL, t, 43), WP_ERR_LIMIT);
    WP_CHECK_EQ(wp_token_generate("bad_prefix", t, sizeof t), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_token_generate("a b", t, sizeof t), WP_ERR_INVAL);
    WP_CHECK_EQ(wp_token_generate("abcdefghijklmnopq", t, sizeof t), WP_ERR_INVAL);
}

WP_TEST(random_bytes)
{
    uint8_t a[4000], b[4000];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    WP_CHECK_EQ(wp_random_bytes(a, sizeof a), 0); /* larger than one DRBG request */
    WP_CHECK_EQ(wp_random_bytes(b, sizeof b), 0);
    WP_CHECK(memcmp(a, b, sizeof a) != 0);
    /* the tail of a big request is filled too */
    uint8_t zero[64] = {0};
    WP_CHECK(memcmp(a + sizeof a - 64, zero, 64) != 0);
    WP_CHECK_EQ(wp_random_bytes(NULL, 0), 0);
}

WP_TEST(random_after_fork_differs)
{
    uint8_t parent[32], child[32];
    int fds[2];
    WP_CHECK_EQ(wp_random_bytes(parent, sizeof parent), 0); /* seeded before fork */
    WP_CHECK_EQ(pipe(fds), 0);
    fflush(stdout);
    pid_t pid = fork();
    WP_CHECK(pid >= 0);
    if (pid == 0) {
        uint8_t r[32];
        int ok = wp_random_bytes(r, sizeof r) == 0;
        ssize_t w = ok ? write(fds[1], r, sizeof r) : -1;
        _exit(w == (ssize_t)sizeof r ? 0 : 1);
    }
    close(fds[1]);
    ssize_t got = read(fds[0], child, sizeof child);
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    WP_CHECK_EQ(got, 32);
    WP_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    WP_CHECK_EQ(wp_random_bytes(parent, sizeof parent), 0); /* what the parent draws next */
    WP_CHECK(memcmp(parent, child, sizeof child) != 0);
}

WP_TEST(secure_zero)
{
    uint8_t s[16];
    memset(s, 0xaa, sizeof s);
    wp_secure_zero(s, sizeof s);
    for (size_t i = 0; i < sizeof s; i++)
        WP_CHECK_EQ(s[i], 0);
    wp_secure_zero(NULL, 0);
}

int main(void)
{
    WP_RUN(sha256_vectors);
    WP_RUN(base64_rfc4648_vectors);
    WP_RUN(base64_malformed_and_limits);
    WP_RUN(base64_roundtrip_random);
    WP_RUN(hex_codec);
    WP_RUN(ct_compare);
    WP_RUN(token_generate);
    WP_RUN(random_bytes);
    WP_RUN(random_after_fork_differs);
    WP_RUN(secure_zero);
    return wp_test_done();
}
