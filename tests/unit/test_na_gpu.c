/*
 * test_na_gpu.c — the GPU inventory (nodeagent/gpu.c) against fake sysfs trees
 * built here (directories, attribute files and the same symlinks as the real
 * /sys/class/drm) and the fake NVML library (tests/fakes/fake_nvml.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "err.h"
#include "gpu.h"
#include "json.h"
#include "wp_test.h"

#ifndef WP_FAKE_NVML
#error "WP_FAKE_NVML (path of libfake_nvml.so) must be defined by the build"
#endif

#define NO_NVML "/nonexistent/libnvidia-ml.so.1"

/* ---- fake sysfs ---- */

static char *tree_new(void)
{
    char tmpl[] = "/tmp/wp-gpu-XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static void tree_free(char *root)
{
    if (root)
        nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(root);
}

static void mkdirs(const char *path)
{
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            (void)mkdir(buf, 0755);
            *p = '/';
        }
    }
    (void)mkdir(buf, 0755);
}

static void put(const char *dir, const char *name, const char *text)
{
    char p[1024];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    WP_CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void link_to(const char *target, const char *at)
{
    WP_CHECK(symlink(target, at) == 0);
}

/*
 * A PCI device at root/devices/pci0000:00/<bus>[/<sub>] with vendor, device and
 * a driver symlink, and its render node renderD<num> linked from class/drm as
 * on a real system. sub (e.g. "virtio0") puts the DRM device one level below
 * the PCI function. Returns the device dir in out.
 */
static void add_gpu(const char *root, const char *bus, const char *sub, const char *vendor,
                    const char *device, const char *driver, unsigned num, char *out, size_t cap)
{
    char dev[512], p[1024], t[512];
    if (sub)
        snprintf(dev, sizeof(dev), "%s/devices/pci0000:00/%s/%s", root, bus, sub);
    else
        snprintf(dev, sizeof(dev), "%s/devices/pci0000:00/%s", root, bus);
    snprintf(p, sizeof(p), "%s/drm/renderD%u", dev, num);
    mkdirs(p);
    snprintf(p, sizeof(p), "%s/drm/card%u", dev, num - 128);
    mkdirs(p);
    snprintf(p, sizeof(p), "%s/class/drm", root);
    mkdirs(p);
    snprintf(p, sizeof(p), "%s/bus/pci/drivers/%s", root, driver);
    mkdirs(p);
    put(dev, "vendor", vendor);
    put(dev, "device", device);
    /* driver -> ../../../bus/pci/drivers/<driver> (one more ../ below a sub device) */
    snprintf(t, sizeof(t), "%s../../../bus/pci/drivers/%s", sub ? "../" : "", driver);
    snprintf(p, sizeof(p), "%s/driver", dev);
    link_to(t, p);
    /* drm/renderDN/device -> ../../../<leaf> */
    snprintf(t, sizeof(t), "../../../%s", sub ? sub : bus);
    snprintf(p, sizeof(p), "%s/drm/renderD%u/device", dev, num);
    link_to(t, p);
    /* class/drm/renderDN -> ../../devices/pci0000:00/<bus>[/<sub>]/drm/renderDN, card too */
    snprintf(t, sizeof(t), "../../devices/pci0000:00/%s%s%s/drm/renderD%u", bus, sub ? "/" : "",
             sub ? sub : "", num);
    snprintf(p, sizeof(p), "%s/class/drm/renderD%u", root, num);
    link_to(t, p);
    snprintf(t, sizeof(t), "../../devices/pci0000:00/%s%s%s/drm/card%u", bus, sub ? "/" : "",
             sub ? sub : "", num - 128);
    snprintf(p, sizeof(p), "%s/class/drm/card%u", root, num - 128);
    link_to(t, p);
    if (out)
        snprintf(out, cap, "%s", dev);
}

static void fixture(const char *root, const char *text)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/nvml.fixture", root);
    put(root, "nvml.fixture", text);
    setenv("FAKE_NVML_FIXTURE", p, 1);
}

static const na_gpu_inventory *collect(const char *root, const char *nvml)
{
    static na_gpu_inventory inv;
    na_gpu *g = NULL;
    memset(&inv, 0, sizeof(inv));
    WP_CHECK_EQ(na_gpu_open(&g, root, nvml), 0);
    if (!g)
        return &inv;
    WP_CHECK(na_gpu_last(g) != NULL);
    WP_CHECK_EQ(na_gpu_collect(g, &inv), 0);
    WP_CHECK(memcmp(na_gpu_last(g), &inv, sizeof(inv)) == 0);
    na_gpu_close(g);
    return &inv;
}

/* Validates the hello gpu object against PROTOCOL.md §4.2 (and controlplane/tunnel.c's check). */
static void check_inventory_json(const na_gpu_inventory *inv)
{
    cJSON *o = na_gpu_inventory_json(inv);
    WP_CHECK(o != NULL);
    if (!o)
        return;
    char *s = wp_json_print(o);
    WP_CHECK(s && strlen(s) < 65536);
    cJSON *back = NULL;
    WP_CHECK_EQ(wp_json_parse(s, strlen(s), 65536, 16, &back), 0);
    cJSON_free(s);
    cJSON_Delete(back);
    const char *v = wp_json_get_str(o, "vendor");
    WP_CHECK(v && (!strcmp(v, "nvidia") || !strcmp(v, "amd") || !strcmp(v, "intel") ||
                   !strcmp(v, "none")));
    const cJSON *devs = cJSON_GetObjectItemCaseSensitive(o, "devices");
    WP_CHECK(cJSON_IsArray(devs) && cJSON_GetArraySize(devs) <= 64);
    WP_CHECK_EQ(cJSON_GetArraySize(devs), inv->n);
    static const wp_json_field f[] = {
        {"index", WP_JSON_INT, 1, 0, 0, 1 << 20},
        {"vendor", WP_JSON_STRING, 1, 32, 0, 0},
        {"vendor_id", WP_JSON_STRING, 0, 6, 0, 0},
        {"device_id", WP_JSON_STRING, 0, 6, 0, 0},
        {"model", WP_JSON_STRING, 0, 255, 0, 0},
        {"uuid", WP_JSON_STRING, 0, 255, 0, 0},
        {"pci_bus_id", WP_JSON_STRING, 0, 255, 0, 0},
        {"render_node", WP_JSON_STRING, 0, 255, 0, 0},
        {"driver", WP_JSON_STRING, 0, 255, 0, 0},
        {"memory_total", WP_JSON_INT, 0, 0, 0, 9007199254740991LL},
        {"memory_used", WP_JSON_INT, 0, 0, 0, 9007199254740991LL},
        {"utilization", WP_JSON_INT, 0, 0, 0, 100},
        {"temperature", WP_JSON_INT, 0, 0, 0, 200},
        {"source", WP_JSON_STRING, 1, 8, 0, 0},
    };
    int i = 0;
    for (const cJSON *d = devs ? devs->child : NULL; d; d = d->next, i++) {
        char err[160] = "";
        int rc = wp_json_validate(d, f, sizeof(f) / sizeof(f[0]), WP_JSON_UNKNOWN_REJECT, err,
                                  sizeof(err));
        if (rc != 0)
            printf("  device %d: %s\n", i, err);
        WP_CHECK_EQ(rc, 0);
        long long idx = -1;
        (void)wp_json_get_int(d, "index", &idx);
        WP_CHECK_EQ(idx, i);
        const char *vid = wp_json_get_str(d, "vendor_id");
        if (vid)
            WP_CHECK(strlen(vid) == 6 && vid[0] == '0' && vid[1] == 'x');
    }
    cJSON_Delete(o);
}

static void check_stats_json(const na_gpu_inventory *inv)
{
    cJSON *a = na_gpu_stats_json(inv);
    WP_CHECK(cJSON_IsArray(a));
    WP_CHECK_EQ(cJSON_GetArraySize(a), inv->n);
    size_t i = 0;
    for (const cJSON *g = a ? a->child : NULL; g; g = g->next, i++) {
        long long idx = -1;
        WP_CHECK_EQ(wp_json_get_int(g, "index", &idx), 0);
        WP_CHECK_EQ(idx, (long long)i);
        static const char *const keys[] = {"utilization", "memory_used", "memory_total",
                                           "temperature"};
        for (size_t k = 0; k < 4; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(g, keys[k]);
            WP_CHECK(v && (cJSON_IsNull(v) || (cJSON_IsNumber(v) && v->valuedouble >= 0)));
        }
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(g, "utilization");
        if (inv->dev[i].utilization < 0)
            WP_CHECK(cJSON_IsNull(u));
        else
            WP_CHECK(cJSON_IsNumber(u) && u->valuedouble == inv->dev[i].utilization);
    }
    cJSON_Delete(a);
}

/* ---- cases ---- */

WP_TEST(pci_normalise)
{
    char out[32];
    WP_CHECK_EQ(na_gpu_pci_normalise("00000000:3B:00.0", out, sizeof(out)), 0);
    WP_CHECK_STR(out, "0000:3b:00.0");
    WP_CHECK_EQ(na_gpu_pci_normalise("0000:3b:00.0", out, sizeof(out)), 0);
    WP_CHECK_STR(out, "0000:3b:00.0");
    WP_CHECK_EQ(na_gpu_pci_normalise("3B:1f.7", out, sizeof(out)), 0);
    WP_CHECK_STR(out, "0000:3b:1f.7");
    WP_CHECK_EQ(na_gpu_pci_normalise("10000:e1:00.0", out, sizeof(out)), 0);
    WP_CHECK_STR(out, "10000:e1:00.0");
    const char *bad[] = {"",
                         "virtio0",
                         "0000:3b:00",
                         "0000:3b:20.0",
                         "0000:3b:00.8",
                         "0000:3b:00.0x",
                         "000000000:3b:00.0",
                         "a:b:c:d.0",
                         "0000:3b:00.0 "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        WP_CHECK_EQ(na_gpu_pci_normalise(bad[i], out, sizeof(out)), WP_ERR_INVAL);
    WP_CHECK_EQ(na_gpu_pci_normalise(NULL, out, sizeof(out)), WP_ERR_INVAL);
    WP_CHECK_EQ(na_gpu_pci_normalise("0000:3b:00.0", out, 8), WP_ERR_INVAL);
}

WP_TEST(open_errors)
{
    na_gpu *g = (na_gpu *)1;
    WP_CHECK_EQ(na_gpu_open(NULL, NULL, NULL), WP_ERR_INVAL);
    WP_CHECK_EQ(na_gpu_open(&g, "/nonexistent-sysfs", NO_NVML), WP_ERR_CONFIG);
    WP_CHECK(g == NULL);
    WP_CHECK_EQ(na_gpu_open(&g, "/etc/hostname", NO_NVML), WP_ERR_CONFIG);
    WP_CHECK_EQ(na_gpu_open(&g, "", NO_NVML), WP_ERR_CONFIG);
    WP_CHECK_EQ(na_gpu_collect(NULL, NULL), WP_ERR_INVAL);
    WP_CHECK(na_gpu_inventory_json(NULL) == NULL);
    WP_CHECK(na_gpu_stats_json(NULL) == NULL);
    na_gpu_close(NULL);
}

WP_TEST(no_gpu)
{
    char *root = tree_new();
    /* nothing at all under the root, then an empty class/drm */
    const na_gpu_inventory *inv = collect(root, NO_NVML);
    WP_CHECK_STR(inv->vendor, "none");
    WP_CHECK_EQ(inv->n, 0);
    WP_CHECK(strstr(inv->nvml_error, "libnvidia-ml.so.1") != NULL); /* why, but no error */
    char p[512];
    snprintf(p, sizeof(p), "%s/class/drm", root);
    mkdirs(p);
    inv = collect(root, NO_NVML);
    WP_CHECK_STR(inv->vendor, "none");
    WP_CHECK_EQ(inv->n, 0);
    check_inventory_json(inv);
    check_stats_json(inv);
    cJSON *o = na_gpu_inventory_json(inv);
    char *s = wp_json_print(o);
    WP_CHECK(s && strstr(s, "\"vendor\":\"none\"") && strstr(s, "\"devices\":[]"));
    cJSON_free(s);
    cJSON_Delete(o);
    tree_free(root);
}

WP_TEST(one_nvidia_sysfs_only)
{
    char *root = tree_new();
    add_gpu(root, "0000:3b:00.0", NULL, "0x10de\n", "0x20b0\n", "nvidia", 128, NULL, 0);
    const na_gpu_inventory *inv = collect(root, NO_NVML);
    WP_CHECK_STR(inv->vendor, "nvidia");
    WP_CHECK_EQ(inv->n, 1);
    const na_gpu_device *d = &inv->dev[0];
    WP_CHECK_EQ(d->index, 0);
    WP_CHECK_STR(d->vendor, "nvidia");
    WP_CHECK_STR(d->vendor_id, "0x10de");
    WP_CHECK_STR(d->device_id, "0x20b0");
    WP_CHECK_STR(d->driver, "nvidia");
    WP_CHECK_STR(d->pci_bus_id, "0000:3b:00.0");
    WP_CHECK_STR(d->render_node, "/dev/dri/renderD128");
    WP_CHECK_EQ(d->source, NA_GPU_SRC_SYSFS);
    WP_CHECK_EQ(d->memory_total, -1);
    WP_CHECK_EQ(d->utilization, -1);
    WP_CHECK(inv->nvml_error[0] != '\0');
    check_inventory_json(inv);
    check_stats_json(inv);
    tree_free(root);
}

WP_TEST(one_amd_with_vram)
{
    char *root = tree_new();
    char dev[512], hw[600];
    add_gpu(root, "0000:03:00.0", NULL, "0x1002\n", "0x73bf\n", "amdgpu", 128, dev, sizeof(dev));
    put(dev, "mem_info_vram_total", "17163091968\n");
    put(dev, "mem_info_vram_used", "1073741824\n");
    put(dev, "gpu_busy_percent", "42\n");
    put(dev, "product_name", "Radeon RX 6900 XT\n");
    snprintf(hw, sizeof(hw), "%s/hwmon/hwmon3", dev);
    mkdirs(hw);
    put(hw, "temp1_input", "55000\n");
    const na_gpu_inventory *inv = collect(root, NO_NVML);
    WP_CHECK_STR(inv->vendor, "amd");
    WP_CHECK_EQ(inv->n, 1);
    const na_gpu_device *d = &inv->dev[0];
    WP_CHECK_STR(d->vendor, "amd");
    WP_CHECK_STR(d->driver, "amdgpu");
    WP_CHECK_STR(d->device_id, "0x73bf");
    WP_CHECK_EQ(d->memory_total, 17163091968LL);
    WP_CHECK_EQ(d->memory_used, 1073741824LL);
    WP_CHECK_EQ(d->utilization, 42);
    WP_CHECK_EQ(d->temperature, 55);
    WP_CHECK_STR(d->model, "Radeon RX 6900 XT");
    WP_CHECK_STR(d->pci_bus_id, "0000:03:00.0");
    check_inventory_json(inv);
    check_stats_json(inv);

    /* hostile values: out of range, not numbers, oversized, embedded NUL: all unknown */
    put(dev, "gpu_busy_percent", "150\n");
    put(dev, "mem_info_vram_total", "-5\n");
    put(dev, "mem_info_vram_used", "99999999999999999999999\n");
    char big[8192];
    memset(big, '7', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    put(dev, "product_name", big);
    put(dev, "vendor", "0x1002zz\n");
    inv = collect(root, NO_NVML);
    d = &inv->dev[0];
    WP_CHECK_EQ(d->utilization, -1);
    WP_CHECK_EQ(d->memory_total, -1);
    WP_CHECK_EQ(d->memory_used, -1);
    WP_CHECK(strlen(d->model) < sizeof(d->model));
    WP_CHECK_STR(d->vendor_id, "");
    WP_CHECK_STR(d->vendor, "amd"); /* still known by its driver */
    check_inventory_json(inv);
    /* a FIFO where an attribute should be must not hang the collector */
    char fifo[600];
    snprintf(fifo, sizeof(fifo), "%s/gpu_busy_percent", dev);
    unlink(fifo);
    WP_CHECK(mkfifo(fifo, 0600) == 0);
    inv = collect(root, NO_NVML);
    WP_CHECK_EQ(inv->n, 1);
    WP_CHECK_EQ(inv->dev[0].utilization, -1);
    tree_free(root);
}

WP_TEST(intel_integrated_and_nvidia_discrete)
{
    char *root = tree_new();
    add_gpu(root, "0000:00:02.0", NULL, "0x8086\n", "0x9a49\n", "i915", 128, NULL, 0);
    add_gpu(root, "0000:01:00.0", NULL, "0x10de\n", "0x2684\n", "nvidia", 129, NULL, 0);
    const na_gpu_inventory *inv = collect(root, NO_NVML);
    WP_CHECK_STR(inv->vendor, "nvidia"); /* best device wins */
    WP_CHECK_EQ(inv->n, 2);
    WP_CHECK_STR(inv->dev[0].vendor, "intel");
    WP_CHECK_STR(inv->dev[0].driver, "i915");
    WP_CHECK_STR(inv->dev[0].render_node, "/dev/dri/renderD128");
    WP_CHECK_STR(inv->dev[1].vendor, "nvidia");
    WP_CHECK_STR(inv->dev[1].render_node, "/dev/dri/renderD129");
    WP_CHECK_EQ(inv->dev[1].index, 1);
    check_inventory_json(inv);
    check_stats_json(inv);
    tree_free(root);
}

WP_TEST(virtio_at_128_real_gpu_at_129)
{
    char *root = tree_new();
    add_gpu(root, "0000:00:01.0", "virtio0", "0x1af4\n", "0x0010\n", "virtio_gpu", 128, NULL, 0);
    add_gpu(root, "0000:00:05.0", NULL, "0x1002\n", "0x740f\n", "amdgpu", 129, NULL, 0);
    const na_gpu_inventory *inv = collect(root, NO_NVML);
    WP_CHECK_STR(inv->vendor, "amd"); /* virtio never wins */
    WP_CHECK_EQ(inv->n, 2);
    WP_CHECK_STR(inv->dev[0].vendor, "virtio");
    WP_CHECK_STR(inv->dev[0].driver, "virtio_gpu");
    WP_CHECK_STR(inv->dev[0].render_node, "/dev/dri/renderD128");
    WP_CHECK_STR(inv->dev[0].pci_bus_id, "0000:00:01.0"); /* the PCI function above virtio0 */
    WP_CHECK_STR(inv->dev[1].vendor, "amd");
    WP_CHECK_STR(inv->dev[1].render_node, "/dev/dri/renderD129");
    check_inventory_json(inv);
    check_stats_json(inv);
    /* virtio alone: listed, but the node has no GPU to offer */
    char *root2 = tree_new();
    add_gpu(root2, "0000:00:01.0", "virtio0", "0x1af4\n", "0x0010\n", "virtio_gpu", 128, NULL, 0);
    inv = collect(root2, NO_NVML);
    WP_CHECK_STR(inv->vendor, "none");
    WP_CHECK_EQ(inv->n, 1);
    check_inventory_json(inv);
    tree_free(root2);
    tree_free(root);
}

static const char two_gpus[] = "driver_version=535.104.05\n"
                               "count=2\n"
                               "gpu0.name=NVIDIA A100-SXM4-40GB\n"
                               "gpu0.uuid=GPU-8d6c0f2e-1111-2222-3333-444455556666\n"
                               "gpu0.bus_id=00000000:3B:00.0\n"
                               "gpu0.pci_device_id=0x20B010DE\n"
                               "gpu0.memory_total=42949672960\n"
                               "gpu0.memory_used=2147483648\n"
                               "gpu0.util=37\n"
                               "gpu0.temperature=61\n"
                               "gpu1.name=ignored\n"
                               "gpu1.name_unterminated=1\n"
                               "gpu1.uuid=GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeffff0000\n"
                               "gpu1.bus_id=00000000:86:00.0\n"
                               "gpu1.pci_device_id=0x20B010DE\n"
                               "gpu1.memory_total=42949672960\n"
                               "gpu1.memory_used=0\n"
                               "gpu1.util=unsupported\n"
                               "gpu1.temperature=40\n";

WP_TEST(nvml_two_gpus_merged_with_sysfs)
{
    char *root = tree_new();
    /* the first NVML GPU has a render node (bus id in sysfs spelling); an Intel iGPU too */
    add_gpu(root, "0000:00:02.0", NULL, "0x8086\n", "0x9a49\n", "i915", 128, NULL, 0);
    add_gpu(root, "0000:3b:00.0", NULL, "0x10de\n", "0x20b0\n", "nvidia", 129, NULL, 0);
    fixture(root, two_gpus);
    const na_gpu_inventory *inv = collect(root, WP_FAKE_NVML);
    WP_CHECK_STR(inv->vendor, "nvidia");
    WP_CHECK_STR(inv->nvml_error, "");
    WP_CHECK_STR(inv->driver_version, "535.104.05");
    WP_CHECK_EQ(inv->n, 3);
    const na_gpu_device *a = &inv->dev[0], *b = &inv->dev[1], *c = &inv->dev[2];
    WP_CHECK_EQ(a->source, NA_GPU_SRC_NVML);
    WP_CHECK_STR(a->model, "NVIDIA A100-SXM4-40GB");
    WP_CHECK_STR(a->uuid, "GPU-8d6c0f2e-1111-2222-3333-444455556666");
    WP_CHECK_STR(a->pci_bus_id, "0000:3b:00.0");
    WP_CHECK_STR(a->render_node, "/dev/dri/renderD129"); /* merged: one entry */
    WP_CHECK_STR(a->vendor_id, "0x10de");
    WP_CHECK_STR(a->device_id, "0x20b0");
    WP_CHECK_STR(a->driver, "nvidia");
    WP_CHECK_EQ(a->memory_total, 42949672960LL);
    WP_CHECK_EQ(a->memory_used, 2147483648LL);
    WP_CHECK_EQ(a->utilization, 37);
    WP_CHECK_EQ(a->temperature, 61);
    WP_CHECK_EQ(b->source, NA_GPU_SRC_NVML);
    WP_CHECK_STR(b->pci_bus_id, "0000:86:00.0");
    WP_CHECK_STR(b->render_node, "");  /* no render node (nvidia-drm not loaded for it) */
    WP_CHECK_EQ(b->utilization, -1);   /* NOT_SUPPORTED: unknown */
    WP_CHECK_EQ(strlen(b->model), 96); /* unterminated name: bounded by our buffer */
    WP_CHECK_EQ(b->temperature, 40);
    WP_CHECK_STR(c->vendor, "intel");
    WP_CHECK_EQ(c->source, NA_GPU_SRC_SYSFS);
    WP_CHECK_EQ(c->index, 2);
    check_inventory_json(inv);
    check_stats_json(inv);
    /* the JSON carries the NVML data */
    cJSON *o = na_gpu_inventory_json(inv);
    WP_CHECK_STR(wp_json_get_str(o, "driver_version"), "535.104.05");
    WP_CHECK(cJSON_GetObjectItemCaseSensitive(o, "nvml_error") == NULL);
    cJSON_Delete(o);
    cJSON *st = na_gpu_stats_json(inv);
    cJSON *s0 = cJSON_GetArrayItem(st, 0);
    long long v = 0;
    WP_CHECK_EQ(wp_json_get_int(s0, "memory_used", &v), 0);
    WP_CHECK_EQ(v, 2147483648LL);
    WP_CHECK(
        cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(st, 1), "utilization")));
    cJSON_Delete(st);
    tree_free(root);
}

WP_TEST(nvml_init_fails_falls_back_to_sysfs)
{
    char *root = tree_new();
    add_gpu(root, "0000:3b:00.0", NULL, "0x10de\n", "0x20b0\n", "nvidia", 128, NULL, 0);
    fixture(root, "init=fail\ncount=1\ngpu0.bus_id=00000000:3B:00.0\n");
    const na_gpu_inventory *inv = collect(root, WP_FAKE_NVML);
    WP_CHECK_STR(inv->vendor, "nvidia");
    WP_CHECK_EQ(inv->n, 1);
    WP_CHECK_EQ(inv->dev[0].source, NA_GPU_SRC_SYSFS);
    WP_CHECK_STR(inv->dev[0].render_node, "/dev/dri/renderD128");
    WP_CHECK(strstr(inv->nvml_error, "nvmlInit_v2") != NULL);
    WP_CHECK(strstr(inv->nvml_error, "Driver Not Loaded") != NULL);
    check_inventory_json(inv);
    cJSON *o = na_gpu_inventory_json(inv);
    WP_CHECK(strstr(wp_json_get_str(o, "nvml_error") ? wp_json_get_str(o, "nvml_error") : "",
                    "Driver Not Loaded") != NULL);
    cJSON_Delete(o);
    tree_free(root);
}

WP_TEST(nvml_recovers_after_failed_init)
{
    /* the driver loads after the agent started: the next collection picks NVML up */
    char *root = tree_new();
    fixture(root, "init=fail\n");
    na_gpu *g = NULL;
    WP_CHECK_EQ(na_gpu_open(&g, root, WP_FAKE_NVML), 0);
    WP_CHECK(strstr(na_gpu_last(g)->nvml_error, "Driver Not Loaded") != NULL);
    fixture(root, two_gpus);
    na_gpu_inventory *inv = calloc(1, sizeof(*inv));
    WP_CHECK_EQ(na_gpu_collect(g, inv), 0);
    WP_CHECK_EQ(inv->n, 2);
    WP_CHECK_STR(inv->nvml_error, "");
    WP_CHECK_STR(inv->vendor, "nvidia");
    free(inv);
    na_gpu_close(g);
    tree_free(root);
}

WP_TEST(not_nvml_library)
{
    /* a library that exists but is not NVML (libc) is refused with a reason, no crash */
    char *root = tree_new();
    const na_gpu_inventory *inv = collect(root, "libc.so.6");
    WP_CHECK_STR(inv->vendor, "none");
    WP_CHECK(strstr(inv->nvml_error, "is not NVML") != NULL);
    tree_free(root);
}

WP_TEST(many_render_nodes_are_bounded)
{
    char *root = tree_new();
    add_gpu(root, "0000:03:00.0", NULL, "0x1002\n", "0x73bf\n", "amdgpu", 128, NULL, 0);
    /* 100 more render nodes, all pointing at the same device */
    for (unsigned i = 129; i < 229; i++) {
        char p[600];
        snprintf(p, sizeof(p), "%s/class/drm/renderD%u", root, i);
        link_to("../../devices/pci0000:00/0000:03:00.0/drm/renderD128", p);
    }
    const na_gpu_inventory *inv = collect(root, NO_NVML);
    WP_CHECK_EQ(inv->n, NA_GPU_MAX);
    WP_CHECK_EQ(inv->dev[NA_GPU_MAX - 1].index, NA_GPU_MAX - 1);
    check_inventory_json(inv);
    check_stats_json(inv);
    tree_free(root);
}

static int refreshed;
static int refresh_err = 1;

static void on_refresh(na_gpu *g, int err, void *ud)
{
    refreshed++;
    refresh_err = err;
    WP_CHECK(ud == &refreshed);
    WP_CHECK(!na_gpu_busy(g));
}

WP_TEST(refresh_async)
{
    char *root = tree_new();
    char dev[512];
    add_gpu(root, "0000:03:00.0", NULL, "0x1002\n", "0x73bf\n", "amdgpu", 128, dev, sizeof(dev));
    put(dev, "gpu_busy_percent", "10\n");
    uv_loop_t loop;
    WP_CHECK_EQ(uv_loop_init(&loop), 0);
    na_gpu *g = NULL;
    WP_CHECK_EQ(na_gpu_open(&g, root, NO_NVML), 0);
    WP_CHECK_STR(na_gpu_last(g)->vendor, "none"); /* nothing collected yet */
    WP_CHECK_EQ(na_gpu_refresh_async(g, &loop, on_refresh, &refreshed), 0);
    WP_CHECK(na_gpu_busy(g));
    WP_CHECK_EQ(na_gpu_refresh_async(g, &loop, on_refresh, &refreshed), WP_ERR_BUSY);
    na_gpu_inventory *inv = calloc(1, sizeof(*inv));
    WP_CHECK_EQ(na_gpu_collect(g, inv), WP_ERR_BUSY);
    uv_run(&loop, UV_RUN_DEFAULT); /* returns once the work and its callback are done */
    WP_CHECK_EQ(refreshed, 1);
    WP_CHECK_EQ(refresh_err, 0);
    WP_CHECK_STR(na_gpu_last(g)->vendor, "amd");
    WP_CHECK_EQ(na_gpu_last(g)->dev[0].utilization, 10);
    /* the next refresh sees new values */
    put(dev, "gpu_busy_percent", "90\n");
    WP_CHECK_EQ(na_gpu_refresh_async(g, &loop, on_refresh, &refreshed), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    WP_CHECK_EQ(refreshed, 2);
    WP_CHECK_EQ(na_gpu_last(g)->dev[0].utilization, 90);
    WP_CHECK_EQ(na_gpu_refresh_async(NULL, &loop, on_refresh, NULL), WP_ERR_INVAL);
    free(inv);
    na_gpu_close(g);
    WP_CHECK_LOOP_CLOSED(&loop);
    tree_free(root);
}

int main(void)
{
    WP_RUN(pci_normalise);
    WP_RUN(open_errors);
    WP_RUN(no_gpu);
    WP_RUN(one_nvidia_sysfs_only);
    WP_RUN(one_amd_with_vram);
    WP_RUN(intel_integrated_and_nvidia_discrete);
    WP_RUN(virtio_at_128_real_gpu_at_129);
    WP_RUN(nvml_two_gpus_merged_with_sysfs);
    WP_RUN(nvml_init_fails_falls_back_to_sysfs);
    WP_RUN(nvml_recovers_after_failed_init);
    WP_RUN(not_nvml_library);
    WP_RUN(many_render_nodes_are_bounded);
    WP_RUN(refresh_async);
    return wp_test_done();
}
