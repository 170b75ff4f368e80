#!/usr/bin/env python3
"""The hello service's server: answers every GET with the greeting it read at start.

hello_server.py start|stop|restart --dir DIR [--port PORT]
DIR holds greeting.txt, server.pid and server.log. `start` daemonizes and returns once the
port answers; `stop` ends the server and waits for it to go.
"""
import argparse
import http.server
import os
import signal
import socket
import sys
import time


def running(pidfile):
    try:
        pid = int(open(pidfile).read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def serve(directory, port):
    greeting = open(os.path.join(directory, "greeting.txt"), "rb").read()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(greeting)))
            self.end_headers()
            self.wfile.write(greeting)

        def log_message(self, *args):
            pass

    http.server.HTTPServer.allow_reuse_address = True
    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()


def start(directory, port):
    pidfile = os.path.join(directory, "server.pid")
    if running(pidfile):
        return
    if os.fork():
        # Parent: wait until the server answers, so the play's next step can rely on it.
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        sys.exit("hello server did not start on port %d" % port)
    os.setsid()
    if os.fork():
        os._exit(0)
    log = open(os.path.join(directory, "server.log"), "ab")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    with open(pidfile, "w") as f:
        f.write(str(os.getpid()))
    serve(directory, port)


def stop(directory):
    pidfile = os.path.join(directory, "server.pid")
    pid = running(pidfile)
    if pid:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not running(pidfile):
                break
            time.sleep(0.05)
    if os.path.exists(pidfile):
        os.remove(pidfile)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("action", choices=["start", "stop", "restart"])
    p.add_argument("--dir", required=True)
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args()
    if a.action in ("stop", "restart"):
        stop(a.dir)
    if a.action in ("start", "restart"):
        start(a.dir, a.port)


if __name__ == "__main__":
    main()
