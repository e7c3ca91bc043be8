"""websockify (Debian) in front of an AMQP peer for hubprobe's tests: WebSocket over
TLS on 127.0.0.1:PORT forwarding binary frames to TARGET, answering the subprotocol
AMQPWSB10 (AMQP over WebSocket) when the client asks for it.

usage: ws_bridge.py PORT TARGET_HOST:TARGET_PORT CERT KEY
"""
import sys

from websockify import websocketproxy, websockifyserver


class AmqpWebSocket(websockifyserver.CompatibleWebSocket):
    def select_subprotocol(self, protocols):
        if "AMQPWSB10" in protocols:
            return "AMQPWSB10"
        return super().select_subprotocol(protocols)


class Handler(websocketproxy.ProxyRequestHandler):
    SocketClass = AmqpWebSocket


def main():
    port = int(sys.argv[1])
    host, target_port = sys.argv[2].rsplit(":", 1)
    server = websocketproxy.WebSocketProxy(
        RequestHandlerClass=Handler,
        listen_host="127.0.0.1",
        listen_port=port,
        target_host=host,
        target_port=int(target_port),
        cert=sys.argv[3],
        key=sys.argv[4],
        ssl_only=True,
        verbose=False,
        daemon=False,
    )
    server.start_server()


if __name__ == "__main__":
    main()
