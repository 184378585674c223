"""A plain TCP forwarder: 127.0.0.1:LOCAL -> HOST:PORT. The stand-in for a tunnel command
(`kubectl port-forward`, `ray dashboard`'s `ssh -L`) in tests of rayscale.forward: it
behaves like one (listens locally, relays bytes, dies when killed)."""

import asyncio
import sys


async def main(local: int, host: str, port: int) -> None:
    async def relay(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(client_r, client_w):
        try:
            up_r, up_w = await asyncio.open_connection(host, port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(relay(client_r, up_w), relay(up_r, client_w))

    server = await asyncio.start_server(handle, "127.0.0.1", local)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
