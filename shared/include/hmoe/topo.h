/* hmoe/topo.h: machine topology through hwloc only: NUMA nodes, their cpusets, binding the
 * calling process (threads and memory) to a node, and node-local allocation. A topology can be
 * this machine, an hwloc XML file, or a synthetic description, so placement for 2 or 4 nodes
 * can be tested on a 1-node machine (binding to a topology that is not this system is refused
 * and reported, never fatal). Not thread-safe per object. */
#ifndef HMOE_TOPO_H
#define HMOE_TOPO_H

#include <stddef.h>
#include <stdio.h>

#include "hmoe/status.h"

#ifdef __cplusplus
extern "C" {
#endif

struct hmoe_topo;

/* spec: NULL or "" = this machine (hwloc still honours HWLOC_XMLFILE / HWLOC_SYNTHETIC in the
 * environment); "synthetic:<desc>" (e.g. "synthetic:pack:2 numa:1 core:2 pu:1"); anything else
 * is an hwloc XML file path. HMOE_E_INVAL / HMOE_E_IO with the hwloc reason on failure. */
enum hmoe_status hmoe_topo_open(const char *spec, struct hmoe_topo **out);
void hmoe_topo_close(struct hmoe_topo *t); /* NULL is a no-op */

/* NUMA nodes (>= 1: a machine without NUMA reports one node). */
int hmoe_topo_n_numa(const struct hmoe_topo *t);
/* Processing units (hardware threads) and cores of node i (-1 when i is out of range). */
int hmoe_topo_n_pus(const struct hmoe_topo *t, int node);
int hmoe_topo_n_cores(const struct hmoe_topo *t, int node);
/* Node i's cpuset as a list ("0-3,8-11") into buf. */
enum hmoe_status hmoe_topo_cpuset_str(const struct hmoe_topo *t, int node, char *buf, size_t n);
/* Local memory of node i in bytes (0 when unknown). */
unsigned long long hmoe_topo_node_memory(const struct hmoe_topo *t, int node);
/* 1 when the topology describes the running machine (binding possible). */
int hmoe_topo_is_this_system(const struct hmoe_topo *t);

/* Binds the whole calling process (all threads, later ones too) to node i's cpus (strict) and
 * its memory policy to node i. Returns HMOE_E_UNSUPPORTED / HMOE_E_INVAL with the reason when
 * the cpu binding is refused (the caller logs it and carries on unbound); a refused memory
 * policy alone is logged here at WARN and the call still succeeds. */
enum hmoe_status hmoe_topo_bind_node(struct hmoe_topo *t, int node);
/* Places [addr, addr+n) on node i (before first touch). Same returns as bind. */
enum hmoe_status hmoe_topo_membind_area(struct hmoe_topo *t, int node, void *addr, size_t n);

/* Prints the NUMA plan for n_workers expert workers (one per node unless told otherwise). */
void hmoe_topo_print(const struct hmoe_topo *t, int n_workers, FILE *f);
/* The node worker i of n runs on: i % n_numa. */
int hmoe_topo_worker_node(const struct hmoe_topo *t, int worker, int n_workers);

#ifdef __cplusplus
}
#endif
#endif
