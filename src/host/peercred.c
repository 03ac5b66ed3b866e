// kts-peercred.node: the credentials of the process at the other end of a unix socket (SO_PEERCRED),
// as the kernel recorded them at connect(); nothing the client sends can change them. An N-API addon
// because node exposes no getsockopt; the daemon passes it an accepted socket's fd.
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <node_api.h>

static napi_value set_uint(napi_env env, napi_value object, const char *name, uint32_t value) {
  napi_value number;
  if (napi_create_uint32(env, value, &number) != napi_ok) return NULL;
  if (napi_set_named_property(env, object, name, number) != napi_ok) return NULL;
  return object;
}

// peerCredentials(fd) → { uid, gid, pid }; throws on a bad fd or a socket without peer credentials.
static napi_value peer_credentials(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, NULL, "peerCredentials: an fd (a non-negative integer) is needed");
    return NULL;
  }
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    napi_throw_error(env, NULL, strerror(errno));
    return NULL;
  }
  napi_value result;
  if (napi_create_object(env, &result) != napi_ok) return NULL;
  if (!set_uint(env, result, "uid", cred.uid) || !set_uint(env, result, "gid", cred.gid) || !set_uint(env, result, "pid", (uint32_t)cred.pid)) return NULL;
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "peerCredentials", NAPI_AUTO_LENGTH, peer_credentials, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "peerCredentials", fn) != napi_ok) return NULL;
  return exports;
}
