/*
 * gpu.h — the node's GPU inventory: NVIDIA through NVML (dlopen()ed at run
 * time, no build-time NVIDIA dependency) and every GPU through
 * /sys/class/drm render nodes (AMD, Intel, virtio, and NVIDIA without NVML).
 *
 * na_gpu_open() loads NVML (a missing library is not an error: no NVIDIA data
 * from NVML, nvml_error says why) and remembers the sysfs root.
 * na_gpu_collect() reads everything (blocking: file reads and NVML calls; for
 * startup and `wolfpack-agent probe`); na_gpu_refresh_async() does the same on
 * the libuv thread pool so the loop never blocks. Both store the sample,
 * which na_gpu_last() returns.
 *
 * Merge rules: a render node and an NVML device with the same PCI bus id
 * (normalised to "dddd:bb:dd.f", lowercase) are one device (NVML data plus the
 * render node). NVML devices come first (NVML order), then the render nodes
 * no NVML device claimed, in renderD number order; `index` is the position in
 * that list. The summary vendor is the best device: nvidia > amd > intel >
 * none (virtio and other devices are listed but never win).
 *
 * Everything read from sysfs is bounded (at most NA_GPU_FILE_MAX bytes per
 * file), trimmed and validated; strings from NVML are bounded and
 * NUL-terminated whatever the library writes.
 */
#ifndef NA_GPU_H
#define NA_GPU_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <uv.h>

#define NA_GPU_MAX      64   /* devices kept (WP_GPUS_MAX) */
#define NA_GPU_FILE_MAX 4096 /* bytes read from one sysfs file */
#define NA_GPU_NODES    256  /* renderD entries examined */

enum na_gpu_source { NA_GPU_SRC_SYSFS = 0, NA_GPU_SRC_NVML = 1 };

typedef struct na_gpu_device {
    int index;            /* position in the inventory, 0.. */
    char vendor[16];      /* nvidia amd intel virtio other */
    char vendor_id[8];    /* "0x10de", "" unknown */
    char device_id[8];    /* "0x20b0", "" unknown */
    char model[128];      /* NVML name or amdgpu product_name, "" unknown */
    char uuid[96];        /* NVML UUID, "" unknown */
    char pci_bus_id[32];  /* "0000:3b:00.0", "" unknown */
    char render_node[64]; /* "/dev/dri/renderD128", "" none */
    char driver[64];      /* kernel driver: nvidia amdgpu i915 xe virtio_gpu ..., "" unknown */
    int64_t memory_total; /* bytes, -1 unknown */
    int64_t memory_used;  /* bytes, -1 unknown */
    int utilization;      /* percent 0..100, -1 unknown */
    int temperature;      /* degrees C, -1 unknown */
    int source;           /* enum na_gpu_source: where the device was found first */
} na_gpu_device;

typedef struct na_gpu_inventory {
    char vendor[16]; /* summary: nvidia amd intel none */
    size_t n;
    na_gpu_device dev[NA_GPU_MAX];
    char driver_version[81]; /* NVML system driver version, "" unknown */
    char nvml_error[128];    /* "" or why NVML data is missing (library absent, init failed) */
} na_gpu_inventory;

typedef struct na_gpu na_gpu; /* the NVML handle, the sysfs root and the last sample */

/*
 * Opens the collector: sysfs_root (NULL: "/sys") must be an existing
 * directory; nvml_lib (NULL: "libnvidia-ml.so.1") is dlopen()ed and
 * initialised now; when that fails the collector still works from sysfs and
 * the inventory's nvml_error says why (not an error). The last sample starts
 * empty (vendor "none"). Returns 0 with *out set, WP_ERR_INVAL (NULL out),
 * WP_ERR_CONFIG (sysfs_root is not a directory or too long) or WP_ERR_NOMEM.
 */
int na_gpu_open(na_gpu **out, const char *sysfs_root, const char *nvml_lib);

/*
 * Collects the inventory now (blocking) into *out and stores it as the last
 * sample. Returns 0 (an empty inventory, vendor "none", is a success),
 * WP_ERR_INVAL (NULL argument) or WP_ERR_BUSY (a refresh is in flight).
 */
int na_gpu_collect(na_gpu *g, na_gpu_inventory *out);

/*
 * Collects on the libuv thread pool (uv_queue_work); when done, stores the
 * sample as the last one and calls cb(g, 0, ud) on the loop thread (err is
 * WP_ERR_CLOSED if the work was cancelled; the last sample is then unchanged).
 * Returns 0 (cb will run exactly once), WP_ERR_INVAL, WP_ERR_BUSY (a refresh
 * is already in flight) or WP_ERR_IO (uv_queue_work failed); cb never runs on
 * failure. The pending work keeps loop alive: uv_run() returns only after cb ran.
 */
int na_gpu_refresh_async(na_gpu *g, uv_loop_t *loop, void (*cb)(na_gpu *g, int err, void *ud),
                         void *ud);

/* 1 while a refresh is in flight (na_gpu_close must wait), else 0. */
int na_gpu_busy(const na_gpu *g);

/* The last collected sample; never NULL for an open collector. */
const na_gpu_inventory *na_gpu_last(const na_gpu *g);

/*
 * The hello `gpu` object (PROTOCOL.md §4.2): {"vendor", "devices":[{index,
 * vendor, vendor_id, device_id, model, uuid, pci_bus_id, render_node, driver,
 * memory_total, memory_used, utilization, temperature}], "driver_version",
 * "nvml_error"}; unknown values are omitted. NULL on allocation failure or
 * NULL inv. Free with cJSON_Delete.
 */
cJSON *na_gpu_inventory_json(const na_gpu_inventory *inv);

/*
 * The heartbeat `gpus` array (PROTOCOL.md §4.4): [{index, utilization,
 * memory_used, memory_total, temperature}] with null for unknown values.
 * NULL on allocation failure or NULL inv. Free with cJSON_Delete.
 */
cJSON *na_gpu_stats_json(const na_gpu_inventory *inv);

/*
 * Normalises a PCI bus id ("00000000:3B:00.0", "0000:3b:00.0", "3b:00.0")
 * to "dddd:bb:dd.f" lowercase. Returns 0, or WP_ERR_INVAL if s is not a PCI
 * address (out untouched). Pure.
 */
int na_gpu_pci_normalise(const char *s, char *out, size_t cap);

/*
 * Closes NVML (nvmlShutdown, dlclose) and frees g. NULL is a no-op. Must not
 * be called while na_gpu_busy(g): the agent closes it only after uv_run()
 * returned (a pending refresh keeps the loop alive until its cb ran).
 */
void na_gpu_close(na_gpu *g);

#endif
