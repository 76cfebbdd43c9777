/* tests/ipc/test_ipc_topo.c: hwloc helpers on synthetic topologies with 2 and 4 NUMA nodes
 * (placement of workers on nodes, cpusets), binding refused on a synthetic topology (reported,
 * not fatal), and this machine's topology loads with >= 1 node. */
#include "hmoe/topo.h"
#include "hmoe_test.h"

int main(void)
{
    struct hmoe_topo *t;
    CHECK(hmoe_topo_open("synthetic:pack:2 numa:1 core:4 pu:2", &t) == HMOE_OK);
    if (t) {
        CHECK(hmoe_topo_n_numa(t) == 2);
        CHECK(hmoe_topo_n_cores(t, 1) == 4 && hmoe_topo_n_pus(t, 1) == 8);
        char cs[64];
        CHECK(hmoe_topo_cpuset_str(t, 1, cs, sizeof cs) == HMOE_OK);
        CHECKF(strcmp(cs, "8-15") == 0, "cpuset %s", cs);
        CHECK(hmoe_topo_cpuset_str(t, 2, cs, sizeof cs) == HMOE_E_INVAL);
        CHECK(!hmoe_topo_is_this_system(t));
        CHECK(hmoe_topo_bind_node(t, 0) == HMOE_E_UNSUPPORTED);
        CHECK(hmoe_topo_worker_node(t, 3, 4) == 1);
        hmoe_topo_close(t);
    }
    CHECK(hmoe_topo_open("synthetic:pack:4 numa:1 core:2 pu:1", &t) == HMOE_OK);
    if (t) {
        CHECK(hmoe_topo_n_numa(t) == 4);
        for (int w = 0; w < 4; w++)
            CHECK(hmoe_topo_worker_node(t, w, 4) == w);
        FILE *f = tmpfile();
        hmoe_topo_print(t, 4, f);
        CHECK(ftell(f) > 0);
        fclose(f);
        hmoe_topo_close(t);
    }
    CHECK(hmoe_topo_open("synthetic:this is not a topology", &t) == HMOE_E_INVAL);
    CHECK(hmoe_topo_open("/nonexistent/topo.xml", &t) != HMOE_OK);

    CHECK(hmoe_topo_open(NULL, &t) == HMOE_OK);
    if (t) {
        CHECK(hmoe_topo_n_numa(t) >= 1 && hmoe_topo_n_pus(t, 0) >= 1);
        /* binding may be refused in a container: either outcome is fine, it must not crash */
        enum hmoe_status st = hmoe_topo_bind_node(t, 0);
        CHECK(st == HMOE_OK || st == HMOE_E_UNSUPPORTED);
        hmoe_topo_close(t);
    }
    TEST_DONE();
}
