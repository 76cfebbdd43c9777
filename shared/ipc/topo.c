/* shared/ipc/topo.c: hwloc topology helpers (see hmoe/topo.h). */
#include "hmoe/topo.h"

#include "hmoe/log.h"

#include <errno.h>
#include <hwloc.h>
#include <stdlib.h>
#include <string.h>

struct hmoe_topo {
    hwloc_topology_t h;
    int n_numa;
};

enum hmoe_status hmoe_topo_open(const char *spec, struct hmoe_topo **out)
{
    *out = NULL;
    struct hmoe_topo *t = calloc(1, sizeof *t);
    if (!t) return hmoe_fail(HMOE_E_NOMEM, "topology: out of memory");
    if (hwloc_topology_init(&t->h) != 0) {
        free(t);
        return hmoe_fail(HMOE_E_IO, "hwloc_topology_init: %s", strerror(errno));
    }
    int rc = 0;
    const char *what = "this machine";
    if (spec && strncmp(spec, "synthetic:", 10) == 0) {
        what = spec + 10;
        rc = hwloc_topology_set_synthetic(t->h, spec + 10);
    } else if (spec && *spec) {
        what = spec;
        rc = hwloc_topology_set_xml(t->h, spec);
    }
    if (rc == 0) rc = hwloc_topology_load(t->h);
    if (rc != 0) {
        int e = errno;
        hwloc_topology_destroy(t->h);
        free(t);
        return hmoe_fail(HMOE_E_INVAL, "hwloc cannot load topology '%s': %s", what, strerror(e));
    }
    int n = hwloc_get_nbobjs_by_type(t->h, HWLOC_OBJ_NUMANODE);
    t->n_numa = n > 0 ? n : 1;
    *out = t;
    return HMOE_OK;
}

void hmoe_topo_close(struct hmoe_topo *t)
{
    if (!t) return;
    hwloc_topology_destroy(t->h);
    free(t);
}

int hmoe_topo_n_numa(const struct hmoe_topo *t)
{
    return t->n_numa;
}

static hwloc_obj_t node_obj(const struct hmoe_topo *t, int node)
{
    if (node < 0 || node >= t->n_numa) return NULL;
    hwloc_obj_t o = hwloc_get_obj_by_type(t->h, HWLOC_OBJ_NUMANODE, (unsigned)node);
    return o ? o : hwloc_get_root_obj(t->h);
}

int hmoe_topo_n_pus(const struct hmoe_topo *t, int node)
{
    hwloc_obj_t o = node_obj(t, node);
    if (!o) return -1;
    return hwloc_get_nbobjs_inside_cpuset_by_type(t->h, o->cpuset, HWLOC_OBJ_PU);
}

int hmoe_topo_n_cores(const struct hmoe_topo *t, int node)
{
    hwloc_obj_t o = node_obj(t, node);
    if (!o) return -1;
    int n = hwloc_get_nbobjs_inside_cpuset_by_type(t->h, o->cpuset, HWLOC_OBJ_CORE);
    return n > 0 ? n : hmoe_topo_n_pus(t, node);
}

enum hmoe_status hmoe_topo_cpuset_str(const struct hmoe_topo *t, int node, char *buf, size_t n)
{
    hwloc_obj_t o = node_obj(t, node);
    if (!o) return hmoe_fail(HMOE_E_INVAL, "no NUMA node %d (have %d)", node, t->n_numa);
    if (hwloc_bitmap_list_snprintf(buf, n, o->cpuset) < 0)
        return hmoe_fail(HMOE_E_INVAL, "cpuset of node %d does not print", node);
    return HMOE_OK;
}

unsigned long long hmoe_topo_node_memory(const struct hmoe_topo *t, int node)
{
    hwloc_obj_t o = node_obj(t, node);
    if (!o) return 0;
    return o->type == HWLOC_OBJ_NUMANODE ? (unsigned long long)o->attr->numanode.local_memory
                                         : (unsigned long long)o->total_memory;
}

int hmoe_topo_is_this_system(const struct hmoe_topo *t)
{
    return hwloc_topology_is_thissystem(t->h);
}

enum hmoe_status hmoe_topo_bind_node(struct hmoe_topo *t, int node)
{
    hwloc_obj_t o = node_obj(t, node);
    if (!o) return hmoe_fail(HMOE_E_INVAL, "no NUMA node %d (have %d)", node, t->n_numa);
    if (!hwloc_topology_is_thissystem(t->h))
        return hmoe_fail(HMOE_E_UNSUPPORTED,
                         "topology is not this system (synthetic or XML): "
                         "not binding to node %d",
                         node);
    if (hwloc_set_cpubind(t->h, o->cpuset, HWLOC_CPUBIND_PROCESS | HWLOC_CPUBIND_STRICT) != 0 &&
        hwloc_set_cpubind(t->h, o->cpuset, HWLOC_CPUBIND_PROCESS) != 0)
        return hmoe_fail(HMOE_E_UNSUPPORTED, "cpu binding to node %d refused: %s", node,
                         strerror(errno));
    /* the threads are placed; a refused memory policy (containers often lack mbind) only
     * costs locality, so it is reported and not treated as a failed binding */
    if (o->type == HWLOC_OBJ_NUMANODE &&
        hwloc_set_membind(t->h, o->nodeset, HWLOC_MEMBIND_BIND,
                          HWLOC_MEMBIND_PROCESS | HWLOC_MEMBIND_BYNODESET) != 0)
        HMOE_LOG_WARN("memory binding to NUMA node %d refused (%s); threads are bound, memory "
                      "follows first touch",
                      node, strerror(errno));
    return HMOE_OK;
}

enum hmoe_status hmoe_topo_membind_area(struct hmoe_topo *t, int node, void *addr, size_t n)
{
    hwloc_obj_t o = node_obj(t, node);
    if (!o) return hmoe_fail(HMOE_E_INVAL, "no NUMA node %d (have %d)", node, t->n_numa);
    if (!hwloc_topology_is_thissystem(t->h))
        return hmoe_fail(HMOE_E_UNSUPPORTED, "topology is not this system");
    if (o->type == HWLOC_OBJ_NUMANODE &&
        hwloc_set_area_membind(t->h, addr, n, o->nodeset, HWLOC_MEMBIND_BIND,
                               HWLOC_MEMBIND_BYNODESET) != 0)
        return hmoe_fail(HMOE_E_UNSUPPORTED, "area binding to node %d refused: %s", node,
                         strerror(errno));
    return HMOE_OK;
}

int hmoe_topo_worker_node(const struct hmoe_topo *t, int worker, int n_workers)
{
    (void)n_workers;
    return worker % t->n_numa;
}

void hmoe_topo_print(const struct hmoe_topo *t, int n_workers, FILE *f)
{
    fprintf(f, "topology: %d NUMA node(s)%s\n", t->n_numa,
            hwloc_topology_is_thissystem(t->h) ? "" : " (synthetic/XML, binding disabled)");
    for (int i = 0; i < t->n_numa; i++) {
        char cs[256];
        if (hmoe_topo_cpuset_str(t, i, cs, sizeof cs) != HMOE_OK) snprintf(cs, sizeof cs, "?");
        fprintf(f, "  node %d: cpus %s, %d cores, %d pus, %.1f GiB\n", i, cs,
                hmoe_topo_n_cores(t, i), hmoe_topo_n_pus(t, i),
                (double)hmoe_topo_node_memory(t, i) / (1024.0 * 1024.0 * 1024.0));
    }
    for (int w = 0; w < n_workers; w++)
        fprintf(f, "  expert worker E%d -> node %d\n", w, hmoe_topo_worker_node(t, w, n_workers));
}
