/** Which of this machine's addresses the OS would use to reach a given IPv4 address: a UDP socket "connected" to it
 * asks the routing table and sends nothing. */
import { createSocket } from 'node:dgram'

export async function localAddressToward(ip: string): Promise<string> {
  const socket = createSocket('udp4')
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject)
      socket.connect(9, ip, () => resolve())
    })
    return socket.address().address
  } finally {
    socket.close()
  }
}
