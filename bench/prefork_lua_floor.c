/* The pre-fork floor with Lua in the loop, for bench/http.sh: bench/prefork_floor.c (N forked
 * processes, one blocking recv and one send per keep-alive request) where each request also
 * does the least a Lua HTTP server must do: it makes a request table (method and path,
 * methods through a metatable), calls a Lua handler with it, and the handler calls three C
 * functions (status, header, body) that assemble the response. No timeouts, no checks, no
 * partial reads: every request arrives in one recv and is answered. What the module costs
 * beyond this is ours; what this costs beyond the plain floor is the price of any server
 * that runs a Lua handler per request in a process of its own.
 *
 *   cc -O2 -I/usr/include/lua5.4 -o lua_floor bench/prefork_lua_floor.c -llua5.4
 *   ./lua_floor PORT WORKERS
 *
 * The Lua state is made and the handler loaded before forking (as moonbridge's master
 * loads the application) and collects in generational mode (as lua5.4 and moonbridge's
 * workers do). Serves until killed; SIGTERM to the parent ends the children too. */
#include <arpa/inet.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "prefork_listen.h"

static const char handler_source[] =
    "return function(request)\n"
    "  request:send_status('200 OK')\n"
    "  request:send_header('Content-Type', 'text/plain; charset=UTF-8')\n"
    "  request:send_data('Hello World!\\n')\n"
    "  return true\n"
    "end\n";

/* The response being assembled: head lines, then the body. */
static char head[1024], body[1024];
static size_t head_len, body_len;

static void append(char *buf, size_t *len, size_t cap, const char *s, size_t n) {
  if (*len + n <= cap) {
    memcpy(buf + *len, s, n);
    *len += n;
  }
}

static int send_status(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  head_len = 0;
  append(head, &head_len, sizeof head, "HTTP/1.1 ", 9);
  append(head, &head_len, sizeof head, s, n);
  append(head, &head_len, sizeof head, "\r\n", 2);
  return 0;
}

static int send_header(lua_State *L) {
  size_t kn, vn;
  const char *k = luaL_checklstring(L, 2, &kn), *v = luaL_checklstring(L, 3, &vn);
  append(head, &head_len, sizeof head, k, kn);
  append(head, &head_len, sizeof head, ": ", 2);
  append(head, &head_len, sizeof head, v, vn);
  append(head, &head_len, sizeof head, "\r\n", 2);
  return 0;
}

static int send_data(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  append(body, &body_len, sizeof body, s, n);
  return 0;
}

static void serve(lua_State *L, int listener) {
  char buf[16384], out[4096];
  for (;;) {
    int c = accept(listener, NULL, NULL);
    if (c < 0) continue;
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ssize_t got;
    while ((got = recv(c, buf, sizeof buf, 0)) > 0) {
      /* "METHOD /path HTTP/1.1": the two words of the request line */
      char *sp1 = memchr(buf, ' ', (size_t)got);
      if (!sp1) break;
      char *path = sp1 + 2, *sp2 = memchr(sp1 + 1, ' ', (size_t)(buf + got - sp1 - 1));
      if (!sp2 || path > sp2) break;
      lua_pushvalue(L, 1); /* the handler */
      lua_createtable(L, 0, 4);
      lua_pushlstring(L, buf, (size_t)(sp1 - buf));
      lua_setfield(L, -2, "method");
      lua_pushlstring(L, path, (size_t)(sp2 - path));
      lua_setfield(L, -2, "path");
      lua_pushvalue(L, 2); /* the request metatable */
      lua_setmetatable(L, -2);
      head_len = body_len = 0;
      if (lua_pcall(L, 1, 1, 0) != LUA_OK) break;
      lua_pop(L, 1);
      int n = snprintf(out, sizeof out,
                       "%.*sDate: Wed, 02 Dec 2026 07:00:00 GMT\r\nContent-Length: %zu\r\n\r\n%.*s",
                       (int)head_len, head, body_len, (int)body_len, body);
      if (n <= 0 || (size_t)n >= sizeof out) break;
      if (send(c, out, (size_t)n, MSG_NOSIGNAL) < 0) break;
    }
    close(c);
  }
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s PORT WORKERS\n", argv[0]);
    return 2;
  }
  int port = atoi(argv[1]), workers = atoi(argv[2]);
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  lua_gc(L, LUA_GCGEN, 0, 0);
  if (luaL_loadstring(L, handler_source) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    return 1;
  }
  /* stack: [1] the handler, [2] the request metatable {__index = methods} */
  lua_createtable(L, 0, 2);
  lua_createtable(L, 0, 3);
  lua_pushcfunction(L, send_status);
  lua_setfield(L, -2, "send_status");
  lua_pushcfunction(L, send_header);
  lua_setfield(L, -2, "send_header");
  lua_pushcfunction(L, send_data);
  lua_setfield(L, -2, "send_data");
  lua_setfield(L, -2, "__index");

  int l = listen_loopback(port);
  if (l < 0) return 1;
  for (int i = 0; i < workers; i++) {
    if (fork() == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      serve(L, l);
    }
  }
  for (;;) pause();
}
