/*
 * cert.c — first-run certificate generation (see cert.h).
 *
 * Generates an ECDSA P-256 CA and a server certificate signed by it with
 * mbedTLS x509write. mbedTLS 2.28 has no subjectAltName or extendedKeyUsage
 * writer, so both extensions are DER-encoded here with the asn1write helpers.
 *
 * State handling, per pair of files (crt + key):
 *   all four present                 -> nothing to do
 *   CA pair present, server missing  -> sign a new server cert with that CA
 *   all four missing                 -> generate CA and server
 *   anything else (one file of a pair, or a server pair without its CA)
 *                                    -> WP_ERR_INVAL naming the file; nothing
 *                                       is overwritten or generated.
 * Every file is written to a fresh temporary name (O_EXCL, mode 0600 for keys,
 * 0644 for certificates), fsync'd and renamed into place.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/asn1write.h>
#include <mbedtls/bignum.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>

#include "cert.h"
#include "err.h"

#define WP_CERT_PEM_MAX     8192
#define WP_CERT_SAN_MAX     64   /* names in one certificate */
#define WP_CERT_SAN_DER     8192 /* encoded subjectAltName extension */
#define WP_CERT_DNS_MAX     253
#define WP_CERT_CA_YEARS    10
#define WP_CERT_SERVER_DAYS 825
#define WP_CERT_SKEW_S      3600

typedef struct wp_cert_rng {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
} wp_cert_rng;

static void wp_cert_errf(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void wp_cert_errf(char *err, size_t cap, const char *fmt, ...)
{
    if (!err || !cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

static void wp_cert_mbed_reason(int ret, char *out, size_t cap)
{
    char tmp[160];
    mbedtls_strerror(ret, tmp, sizeof(tmp));
    snprintf(out, cap, "%s (-0x%04x)", tmp, (unsigned)-ret);
}

static int wp_cert_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Writes data to path via a fresh temporary file, fsync and rename. */
static int wp_cert_write_file(const char *path, const unsigned char *data, size_t len, mode_t mode,
                              char *err, size_t cap)
{
    char tmp[4096 + 32];
    int fd = -1;
    for (int attempt = 0; attempt < 16 && fd < 0; attempt++) {
        if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%ld.%d", path, (long)getpid(), attempt) >=
            sizeof(tmp)) {
            wp_cert_errf(err, cap, "path too long: %s", path);
            return WP_ERR_INVAL;
        }
        fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, mode);
        if (fd < 0 && errno != EEXIST) {
            wp_cert_errf(err, cap, "cannot create %s: %s", tmp, strerror(errno));
            return WP_ERR_IO;
        }
    }
    if (fd < 0) {
        wp_cert_errf(err, cap, "cannot create a temporary file next to %s", path);
        return WP_ERR_IO;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            wp_cert_errf(err, cap, "cannot write %s: %s", tmp, strerror(errno));
            goto fail;
        }
        off += (size_t)w;
    }
    if (fchmod(fd, mode) != 0 || fsync(fd) != 0) {
        wp_cert_errf(err, cap, "cannot sync %s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        wp_cert_errf(err, cap, "cannot close %s: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        wp_cert_errf(err, cap, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        goto fail;
    }
    return 0;

fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return WP_ERR_IO;
}

/* fsyncs a directory so renames into it are durable (best effort). */
static void wp_cert_sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

/* "YYYYMMDDhhmmss" (UTC). */
static void wp_cert_tm_str(const struct tm *tm, char out[16])
{
    if (strftime(out, 16, "%Y%m%d%H%M%S", tm) != 14)
        out[0] = '\0'; /* rejected by mbedtls_x509write_crt_set_validity */
}

/* Validity window: now - skew until now - skew + years/days. */
static void wp_cert_validity(int years, int days, char from[16], char to[16])
{
    time_t start = time(NULL) - WP_CERT_SKEW_S;
    struct tm tm;
    gmtime_r(&start, &tm);
    wp_cert_tm_str(&tm, from);
    if (years) {
        if (tm.tm_mon == 1 && tm.tm_mday == 29)
            tm.tm_mday = 28;
        tm.tm_year += years;
    } else {
        time_t end = start + (time_t)days * 86400;
        gmtime_r(&end, &tm);
    }
    wp_cert_tm_str(&tm, to);
}

static int wp_cert_rng_init(wp_cert_rng *r, char *err, size_t cap)
{
    static const char pers[] = "wolfpack-cert";
    mbedtls_entropy_init(&r->entropy);
    mbedtls_ctr_drbg_init(&r->drbg);
    int ret = mbedtls_ctr_drbg_seed(&r->drbg, mbedtls_entropy_func, &r->entropy,
                                    (const unsigned char *)pers, sizeof(pers) - 1);
    if (ret != 0) {
        char why[200];
        wp_cert_mbed_reason(ret, why, sizeof(why));
        wp_cert_errf(err, cap, "seeding the RNG failed: %s", why);
        return WP_ERR_CRYPTO;
    }
    return 0;
}

static void wp_cert_rng_free(wp_cert_rng *r)
{
    mbedtls_ctr_drbg_free(&r->drbg);
    mbedtls_entropy_free(&r->entropy);
}

static int wp_cert_gen_key(mbedtls_pk_context *pk, wp_cert_rng *r, char *err, size_t cap)
{
    int ret = mbedtls_pk_setup(pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
    if (ret == 0)
        ret = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*pk),
                                  mbedtls_ctr_drbg_random, &r->drbg);
    if (ret != 0) {
        char why[200];
        wp_cert_mbed_reason(ret, why, sizeof(why));
        wp_cert_errf(err, cap, "key generation failed: %s", why);
        return WP_ERR_CRYPTO;
    }
    return 0;
}

static int wp_cert_write_key(mbedtls_pk_context *pk, const char *path, char *err, size_t cap)
{
    unsigned char *pem = calloc(1, WP_CERT_PEM_MAX);
    if (!pem) {
        wp_cert_errf(err, cap, "out of memory");
        return WP_ERR_NOMEM;
    }
    int rc;
    int ret = mbedtls_pk_write_key_pem(pk, pem, WP_CERT_PEM_MAX);
    if (ret != 0) {
        wp_cert_errf(err, cap, "cannot encode private key for %s", path);
        rc = WP_ERR_CRYPTO;
    } else {
        rc = wp_cert_write_file(path, pem, strlen((char *)pem), 0600, err, cap);
    }
    mbedtls_platform_zeroize(pem, WP_CERT_PEM_MAX);
    free(pem);
    return rc;
}

/* Valid DNS name (or wildcard) for a dNSName SAN. */
static int wp_cert_dns_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > WP_CERT_DNS_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '.' || ch == '_' || (ch == '*' && i == 0)))
            return 0;
    }
    return s[0] != '.' && s[0] != '-';
}

typedef struct wp_cert_sans {
    const char *names[WP_CERT_SAN_MAX];
    size_t n;
} wp_cert_sans;

/* Adds a SAN unless already present. 0, or WP_ERR_INVAL (bad or too many). */
static int wp_cert_sans_add(wp_cert_sans *s, const char *name, char *err, size_t cap)
{
    uint8_t ip[16];
    if (inet_pton(AF_INET, name, ip) != 1 && inet_pton(AF_INET6, name, ip) != 1 &&
        !wp_cert_dns_ok(name)) {
        wp_cert_errf(err, cap, "invalid subject alternative name \"%.80s\"", name);
        return WP_ERR_INVAL;
    }
    for (size_t i = 0; i < s->n; i++)
        if (strcasecmp(s->names[i], name) == 0)
            return 0;
    if (s->n == WP_CERT_SAN_MAX) {
        wp_cert_errf(err, cap, "too many subject alternative names (max %d)", WP_CERT_SAN_MAX);
        return WP_ERR_INVAL;
    }
    s->names[s->n++] = name;
    return 0;
}

/*
 * DER of GeneralNames (SEQUENCE OF GeneralName) for the SANs, written backwards
 * into buf. On success *out points at it and its length is returned.
 */
static int wp_cert_san_der(const wp_cert_sans *s, unsigned char *buf, size_t size,
                           unsigned char **out)
{
    unsigned char *p = buf + size;
    size_t len = 0;
    int ret;
    for (size_t i = s->n; i-- > 0;) {
        const char *name = s->names[i];
        uint8_t ip[16];
        size_t iplen = 0, one = 0;
        if (inet_pton(AF_INET, name, ip) == 1)
            iplen = 4;
        else if (inet_pton(AF_INET6, name, ip) == 1)
            iplen = 16;
        if (iplen)
            ret = mbedtls_asn1_write_raw_buffer(&p, buf, ip, iplen);
        else
            ret = mbedtls_asn1_write_raw_buffer(&p, buf, (const unsigned char *)name, strlen(name));
        if (ret < 0)
            return ret;
        one += (size_t)ret;
        if ((ret = mbedtls_asn1_write_len(&p, buf, one)) < 0)
            return ret;
        one += (size_t)ret;
        /* iPAddress [7] OCTET STRING, dNSName [2] IA5String (implicit tags) */
        if ((ret = mbedtls_asn1_write_tag(
                 &p, buf, (unsigned char)(MBEDTLS_ASN1_CONTEXT_SPECIFIC | (iplen ? 7 : 2)))) < 0)
            return ret;
        one += (size_t)ret;
        len += one;
    }
    if ((ret = mbedtls_asn1_write_len(&p, buf, len)) < 0)
        return ret;
    len += (size_t)ret;
    if ((ret = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)) <
        0)
        return ret;
    len += (size_t)ret;
    *out = p;
    return (int)len;
}

/* extendedKeyUsage = SEQUENCE { id-kp-serverAuth } */
static int wp_cert_set_eku_server(mbedtls_x509write_cert *crt)
{
    unsigned char buf[32];
    unsigned char *p = buf + sizeof(buf);
    size_t len = 0;
    int ret = mbedtls_asn1_write_oid(&p, buf, MBEDTLS_OID_SERVER_AUTH,
                                     MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH));
    if (ret < 0)
        return ret;
    len += (size_t)ret;
    if ((ret = mbedtls_asn1_write_len(&p, buf, len)) < 0)
        return ret;
    len += (size_t)ret;
    if ((ret = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)) <
        0)
        return ret;
    len += (size_t)ret;
    return mbedtls_x509write_crt_set_extension(crt, MBEDTLS_OID_EXTENDED_KEY_USAGE,
                                               MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE), 0,
                                               p, len);
}

/* Random positive 128-bit serial (top bit clear, second bit set: never zero). */
static int wp_cert_set_serial(mbedtls_x509write_cert *crt, wp_cert_rng *r)
{
    unsigned char raw[16];
    int ret = mbedtls_ctr_drbg_random(&r->drbg, raw, sizeof(raw));
    if (ret != 0)
        return ret;
    raw[0] = (unsigned char)((raw[0] & 0x7f) | 0x40);
#if MBEDTLS_VERSION_NUMBER >= 0x03040000
    return mbedtls_x509write_crt_set_serial_raw(crt, raw, sizeof(raw));
#else
    mbedtls_mpi serial;
    mbedtls_mpi_init(&serial);
    ret = mbedtls_mpi_read_binary(&serial, raw, sizeof(raw));
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_serial(crt, &serial);
    mbedtls_mpi_free(&serial);
    return ret;
#endif
}

typedef struct wp_cert_spec {
    const char *subject;
    const char *issuer;
    mbedtls_pk_context *subject_key;
    mbedtls_pk_context *issuer_key;
    int is_ca;
    const wp_cert_sans *sans; /* server only */
} wp_cert_spec;

/* Builds, signs and PEM-encodes a certificate into pem (WP_CERT_PEM_MAX). 0 or mbedTLS error. */
static int wp_cert_build(const wp_cert_spec *spec, wp_cert_rng *r, unsigned char *pem)
{
    mbedtls_x509write_cert crt;
    mbedtls_x509write_crt_init(&crt);
    char from[16], to[16];
    unsigned char *san_buf = NULL;
    int ret;

    mbedtls_x509write_crt_set_version(&crt, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&crt, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&crt, spec->subject_key);
    mbedtls_x509write_crt_set_issuer_key(&crt, spec->issuer_key);
    if ((ret = mbedtls_x509write_crt_set_subject_name(&crt, spec->subject)) != 0)
        goto out;
    if ((ret = mbedtls_x509write_crt_set_issuer_name(&crt, spec->issuer)) != 0)
        goto out;
    if ((ret = wp_cert_set_serial(&crt, r)) != 0)
        goto out;
    if (spec->is_ca)
        wp_cert_validity(WP_CERT_CA_YEARS, 0, from, to);
    else
        wp_cert_validity(0, WP_CERT_SERVER_DAYS, from, to);
    if ((ret = mbedtls_x509write_crt_set_validity(&crt, from, to)) != 0)
        goto out;
    if ((ret = mbedtls_x509write_crt_set_basic_constraints(&crt, spec->is_ca,
                                                           spec->is_ca ? 0 : -1)) != 0)
        goto out;
    if ((ret = mbedtls_x509write_crt_set_subject_key_identifier(&crt)) != 0)
        goto out;
    if ((ret = mbedtls_x509write_crt_set_authority_key_identifier(&crt)) != 0)
        goto out;
    if (spec->is_ca) {
        ret = mbedtls_x509write_crt_set_key_usage(&crt, MBEDTLS_X509_KU_KEY_CERT_SIGN |
                                                            MBEDTLS_X509_KU_CRL_SIGN);
        if (ret != 0)
            goto out;
    } else {
        ret = mbedtls_x509write_crt_set_key_usage(&crt, MBEDTLS_X509_KU_DIGITAL_SIGNATURE |
                                                            MBEDTLS_X509_KU_KEY_ENCIPHERMENT);
        if (ret != 0)
            goto out;
        if ((ret = wp_cert_set_eku_server(&crt)) != 0)
            goto out;
        san_buf = malloc(WP_CERT_SAN_DER);
        if (!san_buf) {
            ret = MBEDTLS_ERR_X509_ALLOC_FAILED;
            goto out;
        }
        unsigned char *der = NULL;
        ret = wp_cert_san_der(spec->sans, san_buf, WP_CERT_SAN_DER, &der);
        if (ret < 0)
            goto out;
        ret = mbedtls_x509write_crt_set_extension(&crt, MBEDTLS_OID_SUBJECT_ALT_NAME,
                                                  MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0,
                                                  der, (size_t)ret);
        if (ret != 0)
            goto out;
    }
    ret = mbedtls_x509write_crt_pem(&crt, pem, WP_CERT_PEM_MAX, mbedtls_ctr_drbg_random, &r->drbg);
out:
    free(san_buf);
    mbedtls_x509write_crt_free(&crt);
    return ret;
}

/* Loads the existing CA (certificate + key) and checks they belong together. */
static int wp_cert_load_ca(const wp_cert_paths *paths, mbedtls_x509_crt *ca,
                           mbedtls_pk_context *key, wp_cert_rng *r, char *err, size_t cap)
{
    char why[200];
    int ret = mbedtls_x509_crt_parse_file(ca, paths->ca_crt);
    if (ret != 0 || !ca->raw.p) {
        if (ret < 0)
            wp_cert_mbed_reason(ret, why, sizeof(why));
        else
            snprintf(why, sizeof(why), "no parsable certificate");
        wp_cert_errf(err, cap, "cannot load %s: %s", paths->ca_crt, why);
        return ret == MBEDTLS_ERR_X509_FILE_IO_ERROR ? WP_ERR_IO : WP_ERR_INVAL;
    }
    if (!ca->ca_istrue) {
        wp_cert_errf(err, cap, "%s is not a CA certificate", paths->ca_crt);
        return WP_ERR_INVAL;
    }
#if MBEDTLS_VERSION_MAJOR >= 3
    ret = mbedtls_pk_parse_keyfile(key, paths->ca_key, NULL, mbedtls_ctr_drbg_random, &r->drbg);
#else
    (void)r;
    ret = mbedtls_pk_parse_keyfile(key, paths->ca_key, NULL);
#endif
    if (ret != 0) {
        wp_cert_mbed_reason(ret, why, sizeof(why));
        wp_cert_errf(err, cap, "cannot load %s: %s", paths->ca_key, why);
        return ret == MBEDTLS_ERR_PK_FILE_IO_ERROR ? WP_ERR_IO : WP_ERR_INVAL;
    }
#if MBEDTLS_VERSION_MAJOR >= 3
    ret = mbedtls_pk_check_pair(&ca->pk, key, mbedtls_ctr_drbg_random, &r->drbg);
#else
    ret = mbedtls_pk_check_pair(&ca->pk, key);
#endif
    if (ret != 0) {
        wp_cert_errf(err, cap, "%s and %s do not match", paths->ca_crt, paths->ca_key);
        return WP_ERR_INVAL;
    }
    return 0;
}

static int wp_cert_paths_fill(const char *dir, wp_cert_paths *p, char *err, size_t cap)
{
    struct {
        char *dst;
        const char *name;
    } f[] = {{p->ca_crt, "ca.crt"},
             {p->ca_key, "ca.key"},
             {p->server_crt, "server.crt"},
             {p->server_key, "server.key"}};
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
        if ((size_t)snprintf(f[i].dst, sizeof(p->ca_crt), "%s/%s", dir, f[i].name) >=
            sizeof(p->ca_crt)) {
            wp_cert_errf(err, cap, "state directory path too long");
            return WP_ERR_INVAL;
        }
    }
    return 0;
}

int wp_cert_ensure(const char *dir, const char *const *extra_sans, wp_cert_paths *paths,
                   int *generated, char *err, size_t cap)
{
    wp_cert_paths local;
    if (!paths)
        paths = &local;
    if (generated)
        *generated = 0;
    if (err && cap)
        err[0] = '\0';
    if (!dir || !*dir) {
        wp_cert_errf(err, cap, "no state directory given");
        return WP_ERR_INVAL;
    }
    int rc = wp_cert_paths_fill(dir, paths, err, cap);
    if (rc != 0)
        return rc;
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        wp_cert_errf(err, cap, "state directory %s does not exist", dir);
        return WP_ERR_IO;
    }

    int have_ca_crt = wp_cert_exists(paths->ca_crt), have_ca_key = wp_cert_exists(paths->ca_key);
    int have_srv_crt = wp_cert_exists(paths->server_crt);
    int have_srv_key = wp_cert_exists(paths->server_key);
    if (have_ca_crt != have_ca_key) {
        wp_cert_errf(err, cap, "%s exists but %s is missing; restore it or remove both",
                     have_ca_crt ? paths->ca_crt : paths->ca_key,
                     have_ca_crt ? paths->ca_key : paths->ca_crt);
        return WP_ERR_INVAL;
    }
    if (have_srv_crt != have_srv_key) {
        wp_cert_errf(err, cap, "%s exists but %s is missing; restore it or remove both",
                     have_srv_crt ? paths->server_crt : paths->server_key,
                     have_srv_crt ? paths->server_key : paths->server_crt);
        return WP_ERR_INVAL;
    }
    if (have_srv_crt && !have_ca_crt) {
        wp_cert_errf(err, cap,
                     "%s exists but its CA %s is missing; restore the CA or remove the server "
                     "certificate and key",
                     paths->server_crt, paths->ca_crt);
        return WP_ERR_INVAL;
    }
    if (have_srv_crt)
        return 0; /* all four present */

    /* SANs first: a bad extra name fails before anything is generated. */
    wp_cert_sans sans = {.n = 0};
    char host[256] = "";
    static const char *const fixed[] = {"localhost", "127.0.0.1", "::1"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if ((rc = wp_cert_sans_add(&sans, fixed[i], err, cap)) != 0)
            return rc;
    if (gethostname(host, sizeof(host) - 1) == 0 && wp_cert_dns_ok(host))
        (void)wp_cert_sans_add(&sans, host, err, cap);
    for (size_t i = 0; extra_sans && extra_sans[i]; i++)
        if ((rc = wp_cert_sans_add(&sans, extra_sans[i], err, cap)) != 0)
            return rc;
    if (err && cap)
        err[0] = '\0';

    wp_cert_rng rng;
    mbedtls_pk_context ca_key, srv_key;
    mbedtls_x509_crt ca;
    mbedtls_pk_init(&ca_key);
    mbedtls_pk_init(&srv_key);
    mbedtls_x509_crt_init(&ca);
    unsigned char *ca_pem = calloc(1, WP_CERT_PEM_MAX);
    unsigned char *srv_pem = calloc(1, 2 * WP_CERT_PEM_MAX);
    char ca_subject[256];
    char why[200];
    int ret;
    int wrote = 0;
    if ((rc = wp_cert_rng_init(&rng, err, cap)) != 0)
        goto done;
    if (!ca_pem || !srv_pem) {
        wp_cert_errf(err, cap, "out of memory");
        rc = WP_ERR_NOMEM;
        goto done;
    }

    if (have_ca_crt) {
        if ((rc = wp_cert_load_ca(paths, &ca, &ca_key, &rng, err, cap)) != 0)
            goto done;
        if (mbedtls_x509_dn_gets(ca_subject, sizeof(ca_subject), &ca.subject) < 0) {
            wp_cert_errf(err, cap, "cannot read the subject of %s", paths->ca_crt);
            rc = WP_ERR_INVAL;
            goto done;
        }
        /* The chain written to server.crt: leaf + this CA (PEM of its DER). */
        size_t olen = 0;
        ret =
            mbedtls_pem_write_buffer("-----BEGIN CERTIFICATE-----\n", "-----END CERTIFICATE-----\n",
                                     ca.raw.p, ca.raw.len, ca_pem, WP_CERT_PEM_MAX, &olen);
        if (ret != 0) {
            wp_cert_errf(err, cap, "cannot encode %s", paths->ca_crt);
            rc = WP_ERR_CRYPTO;
            goto done;
        }
    } else {
        unsigned char rnd[4];
        if ((rc = wp_cert_gen_key(&ca_key, &rng, err, cap)) != 0)
            goto done;
        if (mbedtls_ctr_drbg_random(&rng.drbg, rnd, sizeof(rnd)) != 0) {
            wp_cert_errf(err, cap, "RNG failed");
            rc = WP_ERR_CRYPTO;
            goto done;
        }
        snprintf(ca_subject, sizeof(ca_subject), "CN=wolfpack CA %02x%02x%02x%02x,O=wolfpack",
                 rnd[0], rnd[1], rnd[2], rnd[3]);
        wp_cert_spec spec = {.subject = ca_subject,
                             .issuer = ca_subject,
                             .subject_key = &ca_key,
                             .issuer_key = &ca_key,
                             .is_ca = 1};
        if ((ret = wp_cert_build(&spec, &rng, ca_pem)) != 0) {
            wp_cert_mbed_reason(ret, why, sizeof(why));
            wp_cert_errf(err, cap, "cannot create the CA certificate: %s", why);
            rc = WP_ERR_CRYPTO;
            goto done;
        }
    }

    if ((rc = wp_cert_gen_key(&srv_key, &rng, err, cap)) != 0)
        goto done;
    wp_cert_spec spec = {.subject = "CN=wolfpackd,O=wolfpack",
                         .issuer = ca_subject,
                         .subject_key = &srv_key,
                         .issuer_key = &ca_key,
                         .is_ca = 0,
                         .sans = &sans};
    if ((ret = wp_cert_build(&spec, &rng, srv_pem)) != 0) {
        wp_cert_mbed_reason(ret, why, sizeof(why));
        wp_cert_errf(err, cap, "cannot create the server certificate: %s", why);
        rc = WP_ERR_CRYPTO;
        goto done;
    }
    /* server.crt carries the chain (leaf, then CA) so clients can pin the CA. */
    size_t leaf_len = strlen((char *)srv_pem), ca_len = strlen((char *)ca_pem);
    memcpy(srv_pem + leaf_len, ca_pem, ca_len + 1);

    /* Keys before certificates; CA before server. */
    if (!have_ca_crt) {
        if ((rc = wp_cert_write_key(&ca_key, paths->ca_key, err, cap)) != 0)
            goto done;
        wrote = 1;
        if ((rc = wp_cert_write_file(paths->ca_crt, ca_pem, ca_len, 0644, err, cap)) != 0)
            goto done;
    }
    if ((rc = wp_cert_write_key(&srv_key, paths->server_key, err, cap)) != 0)
        goto done;
    wrote = 1;
    if ((rc = wp_cert_write_file(paths->server_crt, srv_pem, leaf_len + ca_len, 0644, err, cap)) !=
        0)
        goto done;
    wp_cert_sync_dir(dir);

done:
    if (generated && wrote)
        *generated = 1;
    if (ca_pem) {
        mbedtls_platform_zeroize(ca_pem, WP_CERT_PEM_MAX);
        free(ca_pem);
    }
    if (srv_pem) {
        mbedtls_platform_zeroize(srv_pem, 2 * WP_CERT_PEM_MAX);
        free(srv_pem);
    }
    mbedtls_x509_crt_free(&ca);
    mbedtls_pk_free(&ca_key);
    mbedtls_pk_free(&srv_key);
    wp_cert_rng_free(&rng);
    return rc;
}
