/* The floor of the pre-forking model, for bench/http.sh: N forked processes accept on one
 * listener and answer every request of a keep-alive connection with one blocking recv and
 * one send of a fixed response (no parsing, no Lua, no timeouts). A Moonbridge server can
 * only be slower; the gap shows what the HTTP module and Lua cost per request.
 *
 *   cc -O2 -o floor bench/prefork_floor.c && ./floor PORT WORKERS [close]
 *
 * With "close" each process answers one request per connection, with a "Connection: close"
 * header (so that the client opens a new connection rather than sending another request),
 * and closes the connection: the floor of one request per connection.
 *
 * Serves until killed; SIGTERM to the parent ends the children too (PR_SET_PDEATHSIG). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "prefork_listen.h"

static const char response[] =
    "HTTP/1.1 200 OK\r\n"
    "Date: Wed, 02 Dec 2026 07:00:00 GMT\r\n"
    "Content-Type: text/plain; charset=UTF-8\r\n"
    "Content-Length: 13\r\n"
    "\r\n"
    "Hello World!\n";

static const char response_close[] =
    "HTTP/1.1 200 OK\r\n"
    "Date: Wed, 02 Dec 2026 07:00:00 GMT\r\n"
    "Content-Type: text/plain; charset=UTF-8\r\n"
    "Content-Length: 13\r\n"
    "Connection: close\r\n"
    "\r\n"
    "Hello World!\n";

static void serve_close(int listener) {
  char buf[16384];
  for (;;) {
    int c = accept(listener, NULL, NULL);
    if (c < 0) continue;
    /* one read (the whole request: wrk sends it in one segment), one response, close */
    if (recv(c, buf, sizeof buf, 0) > 0)
      send(c, response_close, sizeof response_close - 1, MSG_NOSIGNAL);
    close(c);
  }
}

static void serve(int listener) {
  char buf[16384];
  for (;;) {
    int c = accept(listener, NULL, NULL);
    if (c < 0) continue;
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* one response per read: wrk sends one request at a time per connection */
    while (recv(c, buf, sizeof buf, 0) > 0) {
      if (send(c, response, sizeof response - 1, MSG_NOSIGNAL) < 0) break;
    }
    close(c);
  }
}

int main(int argc, char **argv) {
  int close_mode = argc == 4 && strcmp(argv[3], "close") == 0;
  if (argc != 3 && !close_mode) {
    fprintf(stderr, "usage: %s PORT WORKERS [close]\n", argv[0]);
    return 2;
  }
  int port = atoi(argv[1]), workers = atoi(argv[2]);
  int l = listen_loopback(port);
  if (l < 0) return 1;
  for (int i = 0; i < workers; i++) {
    if (fork() == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (close_mode) serve_close(l);
      else serve(l);
    }
  }
  for (;;) pause();
}
