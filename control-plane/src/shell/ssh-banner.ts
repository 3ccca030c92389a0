import { createRequire } from 'node:module';

/**
 * SSH_MSG_USERAUTH_BANNER in the middle of authentication (RFC 4252 §5.4: the server
 * may send it any time before authentication succeeds; OpenSSH prints it on stderr at
 * its default log level). ssh2's server only sends the one static banner of its config,
 * right after the userauth service starts, before any key is known; a refusal that says
 * *why* needs one later. ssh2 has no public call for that, so this writes the packet
 * through the connection's protocol object as ssh2 itself does (ssh2 1.x internals:
 * `_packetRW.write` and `sendPacket` from lib/protocol/utils.js). Should those change,
 * nothing is sent and the refusal is OpenSSH's bare "Permission denied" again; the
 * gateway test with OpenSSH's own client catches that.
 */

const USERAUTH_BANNER = 53;

interface PacketWriter {
  allocStart: number;
  alloc(size: number): Buffer;
  finalize(packet: Buffer): Buffer;
}
interface ProtocolInternals {
  _packetRW?: { write?: PacketWriter };
}
type SendPacket = (proto: ProtocolInternals, packet: Buffer) => boolean;

let sendPacket: SendPacket | null | undefined;
function packetSender(): SendPacket | null {
  if (sendPacket === undefined) {
    try {
      const utils = createRequire(import.meta.url)('ssh2/lib/protocol/utils.js') as { sendPacket?: unknown };
      sendPacket = typeof utils.sendPacket === 'function' ? (utils.sendPacket as SendPacket) : null;
    } catch {
      sendPacket = null;
    }
  }
  return sendPacket;
}

/** Sends `text` as a banner on the connection of an ssh2 server-side auth context; false when it could not. */
export function sendAuthBanner(authContext: object, text: string): boolean {
  const proto = (authContext as { _protocol?: ProtocolInternals })._protocol;
  const write = proto?._packetRW?.write;
  const send = packetSender();
  if (!proto || !write || typeof write.alloc !== 'function' || !send) return false;
  const message = text.endsWith('\r\n') ? text : `${text.replace(/\n$/, '')}\r\n`;
  const len = Buffer.byteLength(message);
  let p = write.allocStart;
  const packet = write.alloc(1 + 4 + len + 4);
  packet[p] = USERAUTH_BANNER;
  packet.writeUInt32BE(len, ++p);
  packet.write(message, (p += 4), len, 'utf8');
  // An empty language tag.
  packet.writeUInt32BE(0, p + len);
  send(proto, write.finalize(packet));
  return true;
}
