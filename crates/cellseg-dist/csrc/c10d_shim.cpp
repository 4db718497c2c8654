// The C ABI between cellseg-dist and libtorch's c10d: a TCPStore rendezvous, a Gloo process group
// and three collectives on tch tensors (`at::Tensor*`). Every entry point catches libtorch's
// exceptions and returns their message through `err` (malloc'd; freed by cd_free_error), so a
// failure is a Rust error, never an abort. Nothing here communicates by itself: c10d does.
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef CELLSEG_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

namespace {

char* copy_message(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.c_str(), s.size() + 1);
  }
  return out;
}

template <typename F>
int guarded(char** err, F&& f) {
  try {
    f();
    return 0;
  } catch (const c10::Error& e) {
    *err = copy_message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    *err = copy_message(e.what());
  } catch (...) {
    *err = copy_message("unknown C++ exception");
  }
  return 1;
}

}  // namespace

extern "C" {

struct cd_group {
#ifdef CELLSEG_WITH_GLOO
  c10::intrusive_ptr<c10d::TCPStore> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#endif
};

int cd_with_gloo() {
#ifdef CELLSEG_WITH_GLOO
  return 1;
#else
  return 0;
#endif
}

void cd_free_error(char* err) { std::free(err); }

// A Gloo group of `world` ranks meeting at the TCPStore on master_addr:port (rank 0 serves it).
// `interface` (may be empty) names the network interface to bind (GLOO_SOCKET_IFNAME); else a
// loopback master binds 127.0.0.1 and any other the machine's default address.
cd_group* cd_group_new(const char* master_addr, uint16_t port, int rank, int world,
                       int64_t timeout_ms, int threads, const char* interface, char** err) {
  cd_group* group = nullptr;
  guarded(err, [&] {
#ifdef CELLSEG_WITH_GLOO
    const std::chrono::milliseconds timeout(timeout_ms);
    c10d::TCPStoreOptions so;
    so.port = port;
    so.isServer = rank == 0;
    so.numWorkers = static_cast<std::size_t>(world);
    so.waitWorkers = true;
    so.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(master_addr), so);
    // Every rank must have been started with rank 0's world size (else Gloo would wait for a
    // rank that never comes, or pair with too few).
    const std::string w = std::to_string(world);
    store->set("cellseg/world_size/" + std::to_string(rank), std::vector<uint8_t>(w.begin(), w.end()));
    const auto w0 = store->get("cellseg/world_size/0");
    const std::string root_world(w0.begin(), w0.end());
    if (root_world != w) {
      throw std::runtime_error("world size mismatch: rank 0 was started with WORLD_SIZE=" +
                               root_world + ", this rank with WORLD_SIZE=" + w);
    }
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    const std::string addr(master_addr);
    const std::string ifname(interface);
    if (!ifname.empty()) {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else if (addr == "localhost" || addr.rfind("127.", 0) == 0) {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    opts->threads = threads;
    auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, opts);
    group = new cd_group{store, gloo};
#else
    (void)master_addr; (void)port; (void)rank; (void)world; (void)timeout_ms; (void)threads;
    (void)interface;
    throw std::runtime_error(
        "cellseg-dist was built without Gloo's headers (install Debian's libgloo-dev: make setup)");
#endif
  });
  return group;
}

void cd_group_free(cd_group* group) { delete group; }

// In-place all-reduce of one dense tensor; op 0 = sum, 1 = mean.
int cd_all_reduce(cd_group* group, at::Tensor* tensor, int op, char** err) {
  return guarded(err, [&] {
#ifdef CELLSEG_WITH_GLOO
    std::vector<at::Tensor> v{*tensor};
    c10d::AllreduceOptions o;
    o.reduceOp = op == 1 ? c10d::ReduceOp(c10d::ReduceOp::AVG) : c10d::ReduceOp(c10d::ReduceOp::SUM);
    group->gloo->allreduce(v, o)->wait();
#else
    (void)group; (void)tensor; (void)op;
#endif
  });
}

// In-place broadcast of one dense tensor from `root`.
int cd_broadcast(cd_group* group, at::Tensor* tensor, int root, char** err) {
  return guarded(err, [&] {
#ifdef CELLSEG_WITH_GLOO
    std::vector<at::Tensor> v{*tensor};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    group->gloo->broadcast(v, o)->wait();
#else
    (void)group; (void)tensor; (void)root;
#endif
  });
}

int cd_barrier(cd_group* group, char** err) {
  return guarded(err, [&] {
#ifdef CELLSEG_WITH_GLOO
    group->gloo->barrier(c10d::BarrierOptions())->wait();
#else
    (void)group;
#endif
  });
}

}  // extern "C"
