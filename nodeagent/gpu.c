/*
 * gpu.c — GPU inventory: NVML loaded with dlopen(), /sys/class/drm render nodes,
 * the merge of both, and the hello/heartbeat JSON (see gpu.h).
 */
#include "gpu.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "log.h"

#define NA_GPU_PATH_MAX  4096
#define NA_GPU_ROOT_MAX  1024
#define NA_JSON_INT_MAX  9007199254740991LL /* 2^53 - 1: exact in a double */
#define NA_NVML_STR_SIZE 96                 /* >= every NVML *_BUFFER_SIZE we ask for */

/* ---- NVML ABI (declared here exactly as in nvml.h; no build-time dependency) ---- */

typedef int nvmlReturn_t; /* an enum in nvml.h: int-sized */
typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct nvmlMemory_st {
    unsigned long long total, free, used;
} nvmlMemory_t;
typedef struct nvmlUtilization_st {
    unsigned int gpu, memory;
} nvmlUtilization_t;
typedef struct nvmlPciInfo_st {
    char busIdLegacy[16];
    unsigned int domain, bus, device;
    unsigned int pciDeviceId; /* device id << 16 | vendor id */
    unsigned int pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

#define NVML_SUCCESS         0
#define NVML_TEMPERATURE_GPU 0

typedef struct na_nvml {
    nvmlReturn_t (*init)(void);
    nvmlReturn_t (*shutdown)(void);
    nvmlReturn_t (*count)(unsigned int *);
    nvmlReturn_t (*handle)(unsigned int, nvmlDevice_t *);
    nvmlReturn_t (*name)(nvmlDevice_t, char *, unsigned int);
    nvmlReturn_t (*uuid)(nvmlDevice_t, char *, unsigned int);
    nvmlReturn_t (*memory)(nvmlDevice_t, nvmlMemory_t *);
    nvmlReturn_t (*util)(nvmlDevice_t, nvmlUtilization_t *);
    nvmlReturn_t (*pci)(nvmlDevice_t, nvmlPciInfo_t *);
    nvmlReturn_t (*temp)(nvmlDevice_t, int, unsigned int *);
    nvmlReturn_t (*driver)(char *, unsigned int);
    const char *(*errstr)(nvmlReturn_t);
} na_nvml;

struct na_gpu {
    char root[NA_GPU_ROOT_MAX];
    char nvml_path[256];
    void *dl;    /* dlopen handle, NULL if the library is absent */
    na_nvml fn;  /* resolved symbols (required ones non-NULL when dl) */
    int nvml_up; /* nvmlInit succeeded and nvmlShutdown is owed */
    char nvml_err[128];
    int busy; /* a refresh is on the thread pool */
    uv_work_t req;
    void (*cb)(na_gpu *g, int err, void *ud);
    void *ud;
    na_gpu_inventory last;
    na_gpu_inventory work;
};

/* ---- bounded text helpers ---- */

/* Copies at most cap-1 bytes of printable ASCII from s (others become '?'); always terminates. */
static void na_copy_printable(char *dst, size_t cap, const char *s, size_t n)
{
    size_t j = 0;
    for (size_t i = 0; i < n && s[i] && j + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[j++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    dst[j] = '\0';
}

static void na_trim(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    size_t k = 0;
    while (s[k] == ' ' || s[k] == '\t')
        k++;
    if (k)
        memmove(s, s + k, n - k + 1);
}

static int na_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Reads at most NA_GPU_FILE_MAX-1 bytes of the regular file dir/name into buf
 * (cap >= 2), trimmed. A FIFO or device is refused (sysfs attributes are
 * regular files; a fake tree must not hang us). Returns 0 or WP_ERR_IO.
 */
static int na_read_attr(const char *dir, const char *name, char *buf, size_t cap)
{
    char path[NA_GPU_PATH_MAX];
    buf[0] = '\0';
    int n = snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof(path))
        return WP_ERR_IO;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return WP_ERR_IO;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return WP_ERR_IO;
    }
    size_t want = cap - 1 < NA_GPU_FILE_MAX - 1 ? cap - 1 : NA_GPU_FILE_MAX - 1, len = 0;
    while (len < want) {
        ssize_t r = read(fd, buf + len, want - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            close(fd);
            buf[0] = '\0';
            return WP_ERR_IO;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    if (strlen(buf) != len) { /* embedded NUL: not a text attribute */
        buf[0] = '\0';
        return WP_ERR_IO;
    }
    na_trim(buf);
    return 0;
}

/* "0x10de" (exactly 0x + 4 hex digits) -> lowercase copy in out[8]. 0 or WP_ERR_INVAL. */
static int na_parse_hexid(const char *s, char *out)
{
    if (strlen(s) != 6 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
        return WP_ERR_INVAL;
    out[0] = '0', out[1] = 'x';
    for (int i = 2; i < 6; i++) {
        int h = na_hex(s[i]);
        if (h < 0)
            return WP_ERR_INVAL;
        out[i] = "0123456789abcdef"[h];
    }
    out[6] = '\0';
    return 0;
}

/* Decimal integer 0..2^53-1 (digits only). 0 or WP_ERR_INVAL. */
static int na_parse_u53(const char *s, int64_t *out)
{
    size_t n = strlen(s);
    if (n == 0 || n > 16)
        return WP_ERR_INVAL;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return WP_ERR_INVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (v > NA_JSON_INT_MAX)
        return WP_ERR_INVAL;
    *out = v;
    return 0;
}

/* Parses 1..max_digits hex digits at *p, advancing it. -1 if none or too many. */
static long na_hex_field(const char **p, int max_digits)
{
    long v = 0;
    int n = 0;
    while (na_hex(**p) >= 0) {
        if (++n > max_digits)
            return -1;
        v = v * 16 + na_hex(**p);
        (*p)++;
    }
    return n ? v : -1;
}

int na_gpu_pci_normalise(const char *s, char *out, size_t cap)
{
    if (!s || !out)
        return WP_ERR_INVAL;
    /* [domain:]bus:dev.fn — count the colons to know whether a domain is present */
    int colons = 0;
    for (const char *q = s; *q; q++)
        colons += *q == ':';
    if (colons < 1 || colons > 2)
        return WP_ERR_INVAL;
    const char *p = s;
    long dom = 0;
    if (colons == 2) {
        dom = na_hex_field(&p, 8);
        if (dom < 0 || *p++ != ':')
            return WP_ERR_INVAL;
    }
    long bus = na_hex_field(&p, 2);
    if (bus < 0 || *p++ != ':')
        return WP_ERR_INVAL;
    long dev = na_hex_field(&p, 2);
    if (dev < 0 || dev > 0x1f || *p++ != '.')
        return WP_ERR_INVAL;
    long fn = na_hex_field(&p, 1);
    if (fn < 0 || fn > 7 || *p != '\0')
        return WP_ERR_INVAL;
    int n = snprintf(out, cap, "%04lx:%02lx:%02lx.%lx", dom, bus, dev, fn);
    if (n < 0 || (size_t)n >= cap)
        return WP_ERR_INVAL;
    return 0;
}

static const char *na_basename(const char *p)
{
    const char *b = strrchr(p, '/');
    return b ? b + 1 : p;
}

static int na_driver_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

static void na_dev_init(na_gpu_device *d)
{
    memset(d, 0, sizeof(*d));
    d->memory_total = d->memory_used = -1;
    d->utilization = d->temperature = -1;
}

static const char *na_vendor_of(const char *vendor_id, const char *driver)
{
    if (strcmp(driver, "virtio_gpu") == 0 || strcmp(driver, "virtio-pci") == 0 ||
        strcmp(vendor_id, "0x1af4") == 0)
        return "virtio";
    if (strcmp(vendor_id, "0x10de") == 0 || strcmp(driver, "nvidia") == 0)
        return "nvidia";
    if (strcmp(vendor_id, "0x1002") == 0 || strcmp(driver, "amdgpu") == 0)
        return "amd";
    if (strcmp(vendor_id, "0x8086") == 0 || strcmp(driver, "i915") == 0 ||
        strcmp(driver, "xe") == 0)
        return "intel";
    return "other";
}

/* ---- sysfs ---- */

/* First hwmonN/temp1_input under devdir, in degrees C; -1 if none. */
static int na_sysfs_temperature(const char *devdir)
{
    char dir[NA_GPU_PATH_MAX], buf[32];
    int n = snprintf(dir, sizeof(dir), "%s/hwmon", devdir);
    if (n < 0 || (size_t)n >= sizeof(dir))
        return -1;
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int temp = -1, seen = 0;
    struct dirent *e;
    while (temp < 0 && seen++ < 16 && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "hwmon", 5) != 0)
            continue;
        char hw[NA_GPU_PATH_MAX];
        n = snprintf(hw, sizeof(hw), "%s/%s", dir, e->d_name);
        int64_t v;
        if (n > 0 && (size_t)n < sizeof(hw) &&
            na_read_attr(hw, "temp1_input", buf, sizeof(buf)) == 0 && na_parse_u53(buf, &v) == 0 &&
            v <= 200000)
            temp = (int)(v / 1000);
    }
    closedir(d);
    return temp;
}

/* Reads render node renderD<num> into *d. 0, or WP_ERR_NOT_FOUND (no device behind it). */
static int na_sysfs_node(const char *root, unsigned num, na_gpu_device *d)
{
    char link[NA_GPU_PATH_MAX], devdir[PATH_MAX], buf[256];
    na_dev_init(d);
    d->source = NA_GPU_SRC_SYSFS;
    int n = snprintf(link, sizeof(link), "%s/class/drm/renderD%u/device", root, num);
    if (n < 0 || (size_t)n >= sizeof(link) || !realpath(link, devdir))
        return WP_ERR_NOT_FOUND;
    snprintf(d->render_node, sizeof(d->render_node), "/dev/dri/renderD%u", num);
    if (na_read_attr(devdir, "vendor", buf, sizeof(buf)) == 0)
        (void)na_parse_hexid(buf, d->vendor_id);
    if (na_read_attr(devdir, "device", buf, sizeof(buf)) == 0)
        (void)na_parse_hexid(buf, d->device_id);
    char drv[NA_GPU_PATH_MAX], target[NA_GPU_PATH_MAX];
    n = snprintf(drv, sizeof(drv), "%s/driver", devdir);
    if (n > 0 && (size_t)n < sizeof(drv)) {
        ssize_t r = readlink(drv, target, sizeof(target) - 1);
        if (r > 0) {
            target[r] = '\0';
            const char *b = na_basename(target);
            if (na_driver_name_valid(b))
                snprintf(d->driver, sizeof(d->driver), "%s", b);
        }
    }
    /* The bus id is the PCI device dir's name; a virtio GPU sits one level below it (virtioN). */
    if (na_gpu_pci_normalise(na_basename(devdir), d->pci_bus_id, sizeof(d->pci_bus_id)) != 0) {
        char *slash = strrchr(devdir, '/');
        if (slash && slash != devdir) {
            *slash = '\0';
            (void)na_gpu_pci_normalise(na_basename(devdir), d->pci_bus_id, sizeof(d->pci_bus_id));
            *slash = '/';
        }
    }
    snprintf(d->vendor, sizeof(d->vendor), "%s", na_vendor_of(d->vendor_id, d->driver));
    if (strcmp(d->vendor, "amd") == 0) {
        int64_t v;
        if (na_read_attr(devdir, "mem_info_vram_total", buf, sizeof(buf)) == 0 &&
            na_parse_u53(buf, &v) == 0)
            d->memory_total = v;
        if (na_read_attr(devdir, "mem_info_vram_used", buf, sizeof(buf)) == 0 &&
            na_parse_u53(buf, &v) == 0)
            d->memory_used = v;
        if (na_read_attr(devdir, "gpu_busy_percent", buf, sizeof(buf)) == 0 &&
            na_parse_u53(buf, &v) == 0 && v <= 100)
            d->utilization = (int)v;
        if (na_read_attr(devdir, "product_name", buf, sizeof(buf)) == 0)
            na_copy_printable(d->model, sizeof(d->model), buf, strlen(buf));
        d->temperature = na_sysfs_temperature(devdir);
    }
    return 0;
}

static int na_cmp_uint(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return x < y ? -1 : x > y;
}

/* Render nodes under root/class/drm, in number order, into dev[0..max). Returns the count. */
static size_t na_sysfs_scan(const char *root, na_gpu_device *dev, size_t max)
{
    char dir[NA_GPU_PATH_MAX];
    unsigned nums[NA_GPU_NODES];
    size_t nn = 0, out = 0;
    int n = snprintf(dir, sizeof(dir), "%s/class/drm", root);
    if (n < 0 || (size_t)n >= sizeof(dir))
        return 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    while (nn < NA_GPU_NODES && (e = readdir(d)) != NULL) {
        const char *s = e->d_name;
        if (strncmp(s, "renderD", 7) != 0 || !s[7] || strlen(s + 7) > 6)
            continue;
        unsigned v = 0;
        int ok = 1;
        for (const char *p = s + 7; *p; p++) {
            if (*p < '0' || *p > '9')
                ok = 0;
            else
                v = v * 10 + (unsigned)(*p - '0');
        }
        if (ok)
            nums[nn++] = v;
    }
    closedir(d);
    qsort(nums, nn, sizeof(nums[0]), na_cmp_uint);
    for (size_t i = 0; i < nn && out < max; i++)
        if (na_sysfs_node(root, nums[i], &dev[out]) == 0)
            out++;
    return out;
}

/* ---- NVML ---- */

static void *na_sym(void *dl, const char *name)
{
    return dlsym(dl, name);
}

#define NA_NVML_SYM(dst, dl, name)                                                                 \
    do {                                                                                           \
        void *s_ = na_sym((dl), (name));                                                           \
        memcpy(&(dst), &s_, sizeof(dst));                                                          \
    } while (0)

static const char *na_nvml_errstr(const na_gpu *g, nvmlReturn_t r)
{
    const char *s = g->fn.errstr ? g->fn.errstr(r) : NULL;
    return s ? s : "error";
}

/* Loads the library and resolves symbols. On failure records why in g->nvml_err. */
static void na_nvml_load(na_gpu *g)
{
    dlerror();
    g->dl = dlopen(g->nvml_path, RTLD_NOW | RTLD_LOCAL);
    if (!g->dl) {
        const char *e = dlerror();
        char m[sizeof(g->nvml_err)];
        na_copy_printable(m, sizeof(m), e ? e : "dlopen failed", e ? strlen(e) : 13);
        snprintf(g->nvml_err, sizeof(g->nvml_err), "%s", m);
        return;
    }
    na_nvml *f = &g->fn;
    NA_NVML_SYM(f->init, g->dl, "nvmlInit_v2");
    NA_NVML_SYM(f->shutdown, g->dl, "nvmlShutdown");
    NA_NVML_SYM(f->count, g->dl, "nvmlDeviceGetCount_v2");
    NA_NVML_SYM(f->handle, g->dl, "nvmlDeviceGetHandleByIndex_v2");
    NA_NVML_SYM(f->name, g->dl, "nvmlDeviceGetName");
    NA_NVML_SYM(f->uuid, g->dl, "nvmlDeviceGetUUID");
    NA_NVML_SYM(f->memory, g->dl, "nvmlDeviceGetMemoryInfo");
    NA_NVML_SYM(f->util, g->dl, "nvmlDeviceGetUtilizationRates");
    NA_NVML_SYM(f->pci, g->dl, "nvmlDeviceGetPciInfo_v3");
    if (!f->pci)
        NA_NVML_SYM(f->pci, g->dl, "nvmlDeviceGetPciInfo_v2");
    NA_NVML_SYM(f->temp, g->dl, "nvmlDeviceGetTemperature");
    NA_NVML_SYM(f->driver, g->dl, "nvmlSystemGetDriverVersion");
    NA_NVML_SYM(f->errstr, g->dl, "nvmlErrorString");
    if (!f->init || !f->shutdown || !f->count || !f->handle) {
        snprintf(g->nvml_err, sizeof(g->nvml_err),
                 "%.48s is not NVML (nvmlInit_v2 or device calls missing)", g->nvml_path);
        dlclose(g->dl);
        g->dl = NULL;
        memset(f, 0, sizeof(*f));
    }
}

/* Initialises NVML if loaded and not up yet. Returns 1 when NVML can be used. */
static int na_nvml_ensure(na_gpu *g)
{
    if (!g->dl)
        return 0;
    if (g->nvml_up)
        return 1;
    nvmlReturn_t r = g->fn.init();
    if (r != NVML_SUCCESS) {
        char m[96];
        const char *s = na_nvml_errstr(g, r);
        na_copy_printable(m, sizeof(m), s, strlen(s));
        snprintf(g->nvml_err, sizeof(g->nvml_err), "nvmlInit_v2: %s (%d)", m, r);
        return 0;
    }
    g->nvml_up = 1;
    g->nvml_err[0] = '\0';
    return 1;
}

/* Copies an NVML string of at most srccap bytes (whatever the library wrote: bounded,
 * NUL-terminated, printable). */
static void na_nvml_str(char *dst, size_t cap, const char *src, size_t srccap)
{
    size_t n = strnlen(src, srccap);
    na_copy_printable(dst, cap, src, n);
}

/* NVML devices into dev[0..max); driver version into inv. Returns the count. */
static size_t na_nvml_collect(na_gpu *g, na_gpu_inventory *inv, na_gpu_device *dev, size_t max)
{
    if (!na_nvml_ensure(g))
        return 0;
    const na_nvml *f = &g->fn;
    char buf[NA_NVML_STR_SIZE + 1];
    if (f->driver) {
        memset(buf, 0, sizeof(buf));
        if (f->driver(buf, NA_NVML_STR_SIZE) == NVML_SUCCESS)
            na_nvml_str(inv->driver_version, sizeof(inv->driver_version), buf, sizeof(buf));
    }
    unsigned int count = 0;
    nvmlReturn_t r = f->count(&count);
    if (r != NVML_SUCCESS) {
        char m[96];
        const char *s = na_nvml_errstr(g, r);
        na_copy_printable(m, sizeof(m), s, strlen(s));
        snprintf(inv->nvml_error, sizeof(inv->nvml_error), "nvmlDeviceGetCount_v2: %s (%d)", m, r);
        return 0;
    }
    size_t out = 0;
    for (unsigned int i = 0; i < count && out < max; i++) {
        nvmlDevice_t h = NULL;
        if (f->handle(i, &h) != NVML_SUCCESS)
            continue;
        na_gpu_device *d = &dev[out++];
        na_dev_init(d);
        d->source = NA_GPU_SRC_NVML;
        snprintf(d->vendor, sizeof(d->vendor), "nvidia");
        snprintf(d->vendor_id, sizeof(d->vendor_id), "0x10de");
        snprintf(d->driver, sizeof(d->driver), "nvidia");
        memset(buf, 0, sizeof(buf));
        if (f->name && f->name(h, buf, NA_NVML_STR_SIZE) == NVML_SUCCESS)
            na_nvml_str(d->model, sizeof(d->model), buf, sizeof(buf));
        memset(buf, 0, sizeof(buf));
        if (f->uuid && f->uuid(h, buf, NA_NVML_STR_SIZE) == NVML_SUCCESS)
            na_nvml_str(d->uuid, sizeof(d->uuid), buf, sizeof(buf));
        nvmlMemory_t mem;
        memset(&mem, 0, sizeof(mem));
        if (f->memory && f->memory(h, &mem) == NVML_SUCCESS && mem.total <= NA_JSON_INT_MAX &&
            mem.used <= mem.total) {
            d->memory_total = (int64_t)mem.total;
            d->memory_used = (int64_t)mem.used;
        }
        nvmlUtilization_t u;
        memset(&u, 0, sizeof(u));
        if (f->util && f->util(h, &u) == NVML_SUCCESS && u.gpu <= 100)
            d->utilization = (int)u.gpu;
        unsigned int t = 0;
        if (f->temp && f->temp(h, NVML_TEMPERATURE_GPU, &t) == NVML_SUCCESS && t <= 200)
            d->temperature = (int)t;
        nvmlPciInfo_t pci;
        memset(&pci, 0, sizeof(pci));
        if (f->pci && f->pci(h, &pci) == NVML_SUCCESS) {
            char id[sizeof(pci.busId) + 1];
            na_nvml_str(id, sizeof(id), pci.busId, sizeof(pci.busId));
            if (na_gpu_pci_normalise(id, d->pci_bus_id, sizeof(d->pci_bus_id)) != 0) {
                na_nvml_str(id, sizeof(id), pci.busIdLegacy, sizeof(pci.busIdLegacy));
                (void)na_gpu_pci_normalise(id, d->pci_bus_id, sizeof(d->pci_bus_id));
            }
            if ((pci.pciDeviceId & 0xffffu) == 0x10deu)
                snprintf(d->device_id, sizeof(d->device_id), "0x%04x",
                         (pci.pciDeviceId >> 16) & 0xffffu);
        }
    }
    return out;
}

/* ---- collection and merge ---- */

static int na_vendor_rank(const char *v)
{
    return strcmp(v, "nvidia") == 0 ? 3 : strcmp(v, "amd") == 0 ? 2 : strcmp(v, "intel") == 0;
}

/* Collects into inv (g->work on the worker thread; only NVML bookkeeping in g changes). */
static void na_gpu_collect_into(na_gpu *g, na_gpu_inventory *inv)
{
    memset(inv, 0, sizeof(*inv));
    na_gpu_device *sys = calloc(NA_GPU_MAX, sizeof(*sys));
    size_t ns = sys ? na_sysfs_scan(g->root, sys, NA_GPU_MAX) : 0;
    size_t nv = na_nvml_collect(g, inv, inv->dev, NA_GPU_MAX);
    if (!inv->nvml_error[0] && g->nvml_err[0])
        snprintf(inv->nvml_error, sizeof(inv->nvml_error), "%s", g->nvml_err);
    inv->n = nv;
    for (size_t i = 0; i < ns; i++) {
        na_gpu_device *s = &sys[i];
        na_gpu_device *match = NULL;
        for (size_t j = 0; s->pci_bus_id[0] && j < nv; j++)
            if (strcmp(inv->dev[j].pci_bus_id, s->pci_bus_id) == 0)
                match = &inv->dev[j];
        if (match) {
            if (!match->render_node[0])
                snprintf(match->render_node, sizeof(match->render_node), "%s", s->render_node);
            if (s->driver[0])
                snprintf(match->driver, sizeof(match->driver), "%s", s->driver);
            if (!match->device_id[0])
                snprintf(match->device_id, sizeof(match->device_id), "%s", s->device_id);
            continue;
        }
        if (inv->n < NA_GPU_MAX)
            inv->dev[inv->n++] = *s;
    }
    free(sys);
    int best = 0;
    for (size_t i = 0; i < inv->n; i++) {
        inv->dev[i].index = (int)i;
        if (na_vendor_rank(inv->dev[i].vendor) > best)
            best = na_vendor_rank(inv->dev[i].vendor);
    }
    static const char *const names[] = {"none", "intel", "amd", "nvidia"};
    snprintf(inv->vendor, sizeof(inv->vendor), "%s", names[best]);
}

int na_gpu_open(na_gpu **out, const char *sysfs_root, const char *nvml_lib)
{
    if (!out)
        return WP_ERR_INVAL;
    *out = NULL;
    const char *root = sysfs_root ? sysfs_root : "/sys";
    const char *lib = nvml_lib ? nvml_lib : "libnvidia-ml.so.1";
    struct stat st;
    if (!root[0] || strlen(root) >= NA_GPU_ROOT_MAX || stat(root, &st) != 0 ||
        !S_ISDIR(st.st_mode) || !lib[0] || strlen(lib) >= 256)
        return WP_ERR_CONFIG;
    na_gpu *g = calloc(1, sizeof(*g));
    if (!g)
        return WP_ERR_NOMEM;
    snprintf(g->root, sizeof(g->root), "%s", root);
    snprintf(g->nvml_path, sizeof(g->nvml_path), "%s", lib);
    snprintf(g->last.vendor, sizeof(g->last.vendor), "none");
    g->req.data = g;
    na_nvml_load(g);
    (void)na_nvml_ensure(g);
    snprintf(g->last.nvml_error, sizeof(g->last.nvml_error), "%s", g->nvml_err);
    *out = g;
    return 0;
}

int na_gpu_collect(na_gpu *g, na_gpu_inventory *out)
{
    if (!g || !out)
        return WP_ERR_INVAL;
    if (g->busy)
        return WP_ERR_BUSY;
    na_gpu_collect_into(g, &g->work);
    g->last = g->work;
    if (out != &g->last)
        *out = g->work;
    return 0;
}

static void na_gpu_work_cb(uv_work_t *req)
{
    na_gpu *g = req->data;
    na_gpu_collect_into(g, &g->work);
}

static void na_gpu_after_cb(uv_work_t *req, int status)
{
    na_gpu *g = req->data;
    g->busy = 0;
    int err = 0;
    if (status == 0)
        g->last = g->work;
    else
        err = WP_ERR_CLOSED;
    void (*cb)(na_gpu *, int, void *) = g->cb;
    void *ud = g->ud;
    g->cb = NULL;
    g->ud = NULL;
    if (cb)
        cb(g, err, ud);
}

int na_gpu_refresh_async(na_gpu *g, uv_loop_t *loop, void (*cb)(na_gpu *g, int err, void *ud),
                         void *ud)
{
    if (!g || !loop)
        return WP_ERR_INVAL;
    if (g->busy)
        return WP_ERR_BUSY;
    g->cb = cb;
    g->ud = ud;
    g->req.data = g;
    if (uv_queue_work(loop, &g->req, na_gpu_work_cb, na_gpu_after_cb) != 0) {
        g->cb = NULL;
        g->ud = NULL;
        return WP_ERR_IO;
    }
    g->busy = 1;
    return 0;
}

int na_gpu_busy(const na_gpu *g)
{
    return g && g->busy;
}

const na_gpu_inventory *na_gpu_last(const na_gpu *g)
{
    return g ? &g->last : NULL;
}

void na_gpu_close(na_gpu *g)
{
    if (!g)
        return;
    if (g->busy) {
        /* A bug in the caller: freeing now would let the worker write freed memory. Leak. */
        wp_log_error("gpu collector closed with a refresh in flight; leaking it");
        return;
    }
    if (g->dl) {
        if (g->nvml_up)
            (void)g->fn.shutdown();
        dlclose(g->dl);
    }
    free(g);
}

/* ---- JSON ---- */

static int na_json_opt_str(cJSON *o, const char *k, const char *v)
{
    return !v[0] || cJSON_AddStringToObject(o, k, v) != NULL;
}

static int na_json_opt_num(cJSON *o, const char *k, int64_t v)
{
    return v < 0 || cJSON_AddNumberToObject(o, k, (double)v) != NULL;
}

static int na_json_num_or_null(cJSON *o, const char *k, int64_t v)
{
    return v < 0 ? cJSON_AddNullToObject(o, k) != NULL
                 : cJSON_AddNumberToObject(o, k, (double)v) != NULL;
}

cJSON *na_gpu_inventory_json(const na_gpu_inventory *inv)
{
    if (!inv)
        return NULL;
    cJSON *o = cJSON_CreateObject();
    int ok = o && cJSON_AddStringToObject(o, "vendor", inv->vendor[0] ? inv->vendor : "none");
    cJSON *devs = ok ? cJSON_AddArrayToObject(o, "devices") : NULL;
    ok = devs && na_json_opt_str(o, "driver_version", inv->driver_version) &&
         na_json_opt_str(o, "nvml_error", inv->nvml_error);
    size_t n = inv->n < NA_GPU_MAX ? inv->n : NA_GPU_MAX;
    for (size_t i = 0; ok && i < n; i++) {
        const na_gpu_device *d = &inv->dev[i];
        cJSON *j = cJSON_CreateObject();
        ok = j && cJSON_AddItemToArray(devs, j);
        if (!ok) {
            cJSON_Delete(j);
            break;
        }
        ok = cJSON_AddNumberToObject(j, "index", d->index) &&
             cJSON_AddStringToObject(j, "vendor", d->vendor[0] ? d->vendor : "other") &&
             na_json_opt_str(j, "vendor_id", d->vendor_id) &&
             na_json_opt_str(j, "device_id", d->device_id) &&
             na_json_opt_str(j, "model", d->model) && na_json_opt_str(j, "uuid", d->uuid) &&
             na_json_opt_str(j, "pci_bus_id", d->pci_bus_id) &&
             na_json_opt_str(j, "render_node", d->render_node) &&
             na_json_opt_str(j, "driver", d->driver) &&
             na_json_opt_num(j, "memory_total", d->memory_total) &&
             na_json_opt_num(j, "memory_used", d->memory_used) &&
             na_json_opt_num(j, "utilization", d->utilization) &&
             na_json_opt_num(j, "temperature", d->temperature) &&
             cJSON_AddStringToObject(j, "source",
                                     d->source == NA_GPU_SRC_NVML ? "nvml" : "sysfs") != NULL;
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *na_gpu_stats_json(const na_gpu_inventory *inv)
{
    if (!inv)
        return NULL;
    cJSON *a = cJSON_CreateArray();
    int ok = a != NULL;
    size_t n = inv->n < NA_GPU_MAX ? inv->n : NA_GPU_MAX;
    for (size_t i = 0; ok && i < n; i++) {
        const na_gpu_device *d = &inv->dev[i];
        cJSON *j = cJSON_CreateObject();
        ok = j && cJSON_AddItemToArray(a, j);
        if (!ok) {
            cJSON_Delete(j);
            break;
        }
        ok = cJSON_AddNumberToObject(j, "index", d->index) &&
             na_json_num_or_null(j, "utilization", d->utilization) &&
             na_json_num_or_null(j, "memory_used", d->memory_used) &&
             na_json_num_or_null(j, "memory_total", d->memory_total) &&
             na_json_num_or_null(j, "temperature", d->temperature);
    }
    if (!ok) {
        cJSON_Delete(a);
        return NULL;
    }
    return a;
}
