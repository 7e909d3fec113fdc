# A tiny multi-client chat server over TCP sockets (run it, then telnet localhost 5555).
import socket
import threading

HOST, PORT = "0.0.0.0", 5555
clients = []


def broadcast(message, sender):
    for c in clients:
        if c is not sender:
            try:
                c.sendall(message)
            except OSError:
                clients.remove(c)


def handle(conn, addr):
    conn.sendall(b"Welcome! Type and press enter.\n")
    while True:
        data = conn.recv(1024)
        if not data:
            break
        broadcast(f"[{addr[0]}] ".encode() + data, conn)
    clients.remove(conn)
    conn.close()


server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.bind((HOST, PORT))
server.listen()
print("Listening on", PORT)
while True:
    conn, addr = server.accept()
    clients.append(conn)
    threading.Thread(target=handle, args=(conn, addr), daemon=True).start()
