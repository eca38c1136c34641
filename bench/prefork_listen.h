/* The listener of bench/prefork_floor.c and bench/prefork_lua_floor.c: TCP on 127.0.0.1:PORT,
 * accepting a connection once its request arrived (TCP_DEFER_ACCEPT, as moonbridge's bench
 * app and nginx's peer, `listen ... deferred`). Returns the socket, or -1 (reported). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static int listen_loopback(int port) {
  int l = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(l, IPPROTO_TCP, TCP_DEFER_ACCEPT, &one, sizeof one);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 512) < 0) {
    perror("listen");
    return -1;
  }
  return l;
}
