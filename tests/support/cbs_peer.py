"""A claims-based-security (CBS) AMQP 1.0 peer for hubprobe's tests, built on Apache
Qpid Proton: SASL ANONYMOUS, a `$cbs` node answering put-token, and the device's
events address, attachable only after an accepted put-token on the same connection.

usage: cbs_peer.py PORT_FILE MODE [CERT KEY]
  MODE accept: a put-token whose token starts with "SharedAccessSignature sr=" gets
               status-code 202; refuse: every put-token gets 401.
  CERT/KEY: serve AMQP over TLS (amqps) with this certificate.
The peer listens on 127.0.0.1 port 0 and writes the port it got to PORT_FILE.
It never prints a token.
"""
import sys

from proton import Message, SSLDomain
from proton.handlers import MessagingHandler
from proton.reactor import Container


class Cbs(MessagingHandler):
    def __init__(self, port_file, mode, cert, key):
        super().__init__(auto_accept=False)
        self.port_file = port_file
        self.mode = mode
        self.cert = cert
        self.key = key

    def on_start(self, event):
        domain = None
        scheme = "amqp"
        if self.cert:
            domain = SSLDomain(SSLDomain.MODE_SERVER)
            domain.set_credentials(self.cert, self.key, None)
            scheme = "amqps"
        event.container.allowed_mechs = "ANONYMOUS"
        acceptor = event.container.listen("%s://127.0.0.1:0" % scheme, ssl_domain=domain)
        port = acceptor._selectable._delegate.getsockname()[1]
        with open(self.port_file + ".tmp", "w") as f:
            f.write(str(port))
        import os
        os.rename(self.port_file + ".tmp", self.port_file)

    def on_connection_opening(self, event):
        event.connection.container = "lab-cbs"
        event.connection.properties = {
            "product": "hubprobe-lab-cbs",
            "version": "1",
        }

    def on_link_opening(self, event):
        link = event.link
        if link.is_sender:
            # The client's receiver: replies from $cbs go to its target address.
            link.source.copy(link.remote_source)
            link.target.copy(link.remote_target)
            return
        address = link.remote_target.address
        link.target.copy(link.remote_target)
        link.source.copy(link.remote_source)
        if address == "$cbs":
            link.flow(10)
            return
        if address and address.startswith("/devices/") and address.endswith("/messages/events"):
            if getattr(link.connection, "lab_authorized", False):
                link.flow(10)
                return
            link.condition = _condition("amqp:unauthorized-access",
                                        "put a token for this device first")
            link.open()
            link.close()
            return
        link.condition = _condition("amqp:not-found", "no such node")
        link.open()
        link.close()

    def on_link_remote_detach(self, event):
        # A detach without close is answered with a detach (AMQP 1.0, 2.6.4).
        event.link.detach()

    def on_message(self, event):
        link = event.receiver
        if link.remote_target.address != "$cbs":
            self.accept(event.delivery)
            return
        msg = event.message
        body = msg.body if isinstance(msg.body, str) else ""
        ok = self.mode == "accept" and body.startswith("SharedAccessSignature sr=")
        if ok:
            link.connection.lab_authorized = True
        self.accept(event.delivery)
        reply = Message(
            address=msg.reply_to,
            correlation_id=msg.id,
            properties={
                "status-code": 202 if ok else 401,
                "status-description": "Accepted" if ok else "Unauthorized: the token was refused",
            },
        )
        sender = _reply_link(link.connection, msg.reply_to)
        if sender is not None:
            sender.send(reply)


def _reply_link(connection, address):
    """The sender link (the client's receiver) whose target is `address`."""
    from proton import Endpoint
    link = connection.link_head(Endpoint.LOCAL_ACTIVE)
    for _ in range(1000):
        if link is None:
            return None
        if link.is_sender and link.remote_target.address == address:
            return link
        link = link.next(Endpoint.LOCAL_ACTIVE)
    return None


def _condition(name, description):
    from proton import Condition
    return Condition(name, description)


def main():
    port_file, mode = sys.argv[1], sys.argv[2]
    cert = sys.argv[3] if len(sys.argv) > 4 else None
    key = sys.argv[4] if len(sys.argv) > 4 else None
    Container(Cbs(port_file, mode, cert, key)).run()


if __name__ == "__main__":
    main()
