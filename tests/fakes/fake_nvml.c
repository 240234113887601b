/*
 * fake_nvml.c — a stand-in for libnvidia-ml.so.1 in tests: exports the NVML
 * functions wolfpack-agent uses, with NVML's ABI (structs declared as in
 * nvml.h), serving GPUs described by a fixture file.
 *
 * The fixture is named by the environment variable FAKE_NVML_FIXTURE and read
 * at every nvmlInit_v2 (so a test can change it between inits). Lines are
 * key=value ('#' comments, blank lines ignored):
 *
 *   init=fail                 nvmlInit_v2 returns NVML_ERROR_DRIVER_NOT_LOADED (9)
 *   driver_version=535.104.05
 *   count=2                   devices (at most 16)
 *   gpu0.name=NVIDIA A100-SXM4-40GB
 *   gpu0.uuid=GPU-8d6c...
 *   gpu0.bus_id=00000000:3B:00.0
 *   gpu0.pci_device_id=0x20B010DE  (device id << 16 | vendor id)
 *   gpu0.memory_total=42949672960  gpu0.memory_used=2147483648  (bytes)
 *   gpu0.util=37              or "unsupported" (NVML_ERROR_NOT_SUPPORTED)
 *   gpu0.temperature=61
 *   gpu0.name_unterminated=1  nvmlDeviceGetName fills the whole buffer without a NUL
 *
 * No fixture (or an unreadable one) makes nvmlInit_v2 fail with 9 as well.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;
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
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
};

#define FAKE_MAX_GPUS 16
#define FAKE_LINE_MAX 512

struct nvmlDevice_st {
    char name[128];
    char uuid[128];
    char bus_id[32];
    unsigned int pci_device_id;
    unsigned long long memory_total, memory_used;
    int util; /* -1: not supported */
    unsigned int temperature;
    int name_unterminated;
};

static struct {
    int initialized;
    char driver_version[96];
    unsigned int count;
    struct nvmlDevice_st gpu[FAKE_MAX_GPUS];
} fake;

#define FAKE_EXPORT __attribute__((visibility("default")))

FAKE_EXPORT nvmlReturn_t nvmlInit_v2(void);
FAKE_EXPORT nvmlReturn_t nvmlShutdown(void);
FAKE_EXPORT const char *nvmlErrorString(nvmlReturn_t r);
FAKE_EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length);
FAKE_EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count);
FAKE_EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device);
FAKE_EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length);
FAKE_EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length);
FAKE_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory);
FAKE_EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device,
                                                       nvmlUtilization_t *utilization);
FAKE_EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci);
FAKE_EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensor,
                                                  unsigned int *temp);

static void fake_set(const char *key, const char *val, int *fail)
{
    if (strcmp(key, "init") == 0) {
        *fail = strcmp(val, "fail") == 0;
        return;
    }
    if (strcmp(key, "driver_version") == 0) {
        snprintf(fake.driver_version, sizeof(fake.driver_version), "%s", val);
        return;
    }
    if (strcmp(key, "count") == 0) {
        unsigned long n = strtoul(val, NULL, 10);
        fake.count = n > FAKE_MAX_GPUS ? FAKE_MAX_GPUS : (unsigned int)n;
        return;
    }
    char *end = NULL;
    if (strncmp(key, "gpu", 3) != 0)
        return;
    unsigned long i = strtoul(key + 3, &end, 10);
    if (!end || *end != '.' || i >= FAKE_MAX_GPUS)
        return;
    struct nvmlDevice_st *g = &fake.gpu[i];
    const char *f = end + 1;
    if (strcmp(f, "name") == 0)
        snprintf(g->name, sizeof(g->name), "%s", val);
    else if (strcmp(f, "uuid") == 0)
        snprintf(g->uuid, sizeof(g->uuid), "%s", val);
    else if (strcmp(f, "bus_id") == 0)
        snprintf(g->bus_id, sizeof(g->bus_id), "%s", val);
    else if (strcmp(f, "pci_device_id") == 0)
        g->pci_device_id = (unsigned int)strtoul(val, NULL, 16);
    else if (strcmp(f, "memory_total") == 0)
        g->memory_total = strtoull(val, NULL, 10);
    else if (strcmp(f, "memory_used") == 0)
        g->memory_used = strtoull(val, NULL, 10);
    else if (strcmp(f, "util") == 0)
        g->util = strcmp(val, "unsupported") == 0 ? -1 : atoi(val);
    else if (strcmp(f, "temperature") == 0)
        g->temperature = (unsigned int)strtoul(val, NULL, 10);
    else if (strcmp(f, "name_unterminated") == 0)
        g->name_unterminated = atoi(val);
}

/* Loads the fixture. Returns 0, or -1 when init must fail. */
static int fake_load(void)
{
    memset(&fake, 0, sizeof(fake));
    const char *path = getenv("FAKE_NVML_FIXTURE");
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f)
        return -1;
    char line[FAKE_LINE_MAX];
    int fail = 0;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0')
            continue;
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        fake_set(line, eq + 1, &fail);
    }
    fclose(f);
    return fail ? -1 : 0;
}

static nvmlReturn_t fake_str(const char *s, char *out, unsigned int length)
{
    if (!out)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(s) + 1 > length)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(out, s, strlen(s) + 1);
    return NVML_SUCCESS;
}

static nvmlReturn_t fake_dev(nvmlDevice_t d)
{
    if (!fake.initialized)
        return NVML_ERROR_UNINITIALIZED;
    if (!d || d < &fake.gpu[0] || d >= &fake.gpu[fake.count])
        return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void)
{
    if (fake_load() != 0) {
        memset(&fake, 0, sizeof(fake));
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    fake.initialized = 1;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlShutdown(void)
{
    if (!fake.initialized)
        return NVML_ERROR_UNINITIALIZED;
    fake.initialized = 0;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t r)
{
    switch (r) {
    case NVML_SUCCESS:
        return "Success";
    case NVML_ERROR_UNINITIALIZED:
        return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT:
        return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED:
        return "Not Supported";
    case NVML_ERROR_INSUFFICIENT_SIZE:
        return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED:
        return "Driver Not Loaded";
    default:
        return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    if (!fake.initialized)
        return NVML_ERROR_UNINITIALIZED;
    return fake_str(fake.driver_version, version, length);
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count)
{
    if (!fake.initialized)
        return NVML_ERROR_UNINITIALIZED;
    if (!count)
        return NVML_ERROR_INVALID_ARGUMENT;
    *count = fake.count;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    if (!fake.initialized)
        return NVML_ERROR_UNINITIALIZED;
    if (!device || index >= fake.count)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = &fake.gpu[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length)
{
    nvmlReturn_t r = fake_dev(device);
    if (r != NVML_SUCCESS)
        return r;
    if (device->name_unterminated && name && length > 0) {
        memset(name, 'A', length); /* a hostile library: no terminator at all */
        return NVML_SUCCESS;
    }
    return fake_str(device->name, name, length);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length)
{
    nvmlReturn_t r = fake_dev(device);
    return r != NVML_SUCCESS ? r : fake_str(device->uuid, uuid, length);
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory)
{
    nvmlReturn_t r = fake_dev(device);
    if (r != NVML_SUCCESS)
        return r;
    if (!memory)
        return NVML_ERROR_INVALID_ARGUMENT;
    memory->total = device->memory_total;
    memory->used = device->memory_used;
    memory->free = device->memory_total - device->memory_used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization)
{
    nvmlReturn_t r = fake_dev(device);
    if (r != NVML_SUCCESS)
        return r;
    if (device->util < 0)
        return NVML_ERROR_NOT_SUPPORTED;
    if (!utilization)
        return NVML_ERROR_INVALID_ARGUMENT;
    utilization->gpu = (unsigned int)device->util;
    utilization->memory = 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    nvmlReturn_t r = fake_dev(device);
    if (r != NVML_SUCCESS)
        return r;
    if (!pci)
        return NVML_ERROR_INVALID_ARGUMENT;
    memset(pci, 0, sizeof(*pci));
    snprintf(pci->busId, sizeof(pci->busId), "%s", device->bus_id);
    unsigned int dom = 0, bus = 0, dev = 0;
    if (sscanf(device->bus_id, "%x:%x:%x", &dom, &bus, &dev) == 3) {
        pci->domain = dom, pci->bus = bus, pci->device = dev;
        snprintf(pci->busIdLegacy, sizeof(pci->busIdLegacy), "%04x:%02x:%02x.0", dom & 0xffffu,
                 bus & 0xffu, dev & 0xffu);
    }
    pci->pciDeviceId = device->pci_device_id;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensor, unsigned int *temp)
{
    nvmlReturn_t r = fake_dev(device);
    if (r != NVML_SUCCESS)
        return r;
    if (sensor != 0 || !temp)
        return NVML_ERROR_INVALID_ARGUMENT;
    *temp = device->temperature;
    return NVML_SUCCESS;
}
