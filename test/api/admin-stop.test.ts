/** POST /admin/stop on its own (the 3-node path is test/cluster/cluster-stop.test.ts): fields checked by name, the stop
 * started once, a drain that waits for the running requests, a later `now` that cuts it, and a halt with a clear error. */
import { expect, test } from 'bun:test'
import { Hono } from 'hono'
import { addStopRoute } from '../../src/api/admin-stop.ts'
import { errorResponse } from '../../src/api/errors.ts'
import { NodeStop, type DrainingScheduler } from '../../src/cluster/cluster-stop.ts'
import type { DbcError } from '../../src/errors.ts'

function setup() {
  const scheduler = {
    running: 2,
    closed: false,
    degraded: null as string | null,
    close() {
      this.closed = true
    },
    setDegraded(reason: string | null) {
      this.degraded = reason
      this.running = 0 // the scheduler fails its running requests with the reason
    },
  }
  let exited = 0
  const halted: DbcError[] = []
  const stop = new NodeStop(() => exited++)
  const app = new Hono()
  app.onError((error, c) => errorResponse(c, error))
  addStopRoute(app, { scheduler: scheduler as DrainingScheduler }, stop)
  const post = (body?: unknown) =>
    app.request('/admin/stop', { method: 'POST', body: body === undefined ? undefined : JSON.stringify(body) })
  return { scheduler, stop, post, halted, exits: () => exited }
}

test('fields are checked by name before anything stops', async () => {
  const { post, scheduler } = setup()
  for (const [body, text] of [
    [{ now: 'yes' }, 'now must be true or false'],
    [{ drain_timeout_s: -1 }, 'drain_timeout_s must be a number of seconds >= 0'],
    [{ force: true }, "unknown field 'force'"],
    [[1], 'must be a JSON object'],
  ] as const) {
    const res = await post(body)
    expect(res.status).toBe(400)
    expect(JSON.stringify(await res.json())).toContain(text)
  }
  expect(scheduler.closed).toBe(false)
})

test('a drain waits for the running requests; a second stop with now cuts it and fails them', async () => {
  const { post, scheduler, stop, exits } = setup()
  const res = await post({ drain_timeout_s: 30 })
  expect(res.status).toBe(202)
  expect(await res.json()).toEqual({ stopping: true, started: true, now: false, drain_timeout_s: 30, running: 2 })
  expect(scheduler.closed).toBe(true) // nothing new is admitted
  await Bun.sleep(120)
  expect(exits()).toBe(0) // still draining
  expect(stop.status?.now).toBe(false)
  const again = await (await post({ now: true })).json()
  expect(again).toMatchObject({ started: false, now: true })
  for (let i = 0; i < 40 && exits() === 0; i++) await Bun.sleep(25)
  expect(exits()).toBe(1)
  // no node registered hooks: the scheduler fails the requests with the reason
  expect(scheduler.degraded).toContain('stopped at once (dbcluster cluster stop --now)')
})

test("a node's hooks halt its work and stop its members before it ends", async () => {
  const { post, scheduler, stop, halted, exits } = setup()
  const order: string[] = []
  stop.register({
    halt: (error) => {
      halted.push(error)
      order.push('halt')
      scheduler.running = 0
    },
    stopMembers: async (request) => void order.push(`members now=${request.now}`),
  })
  expect((await post({ drain_timeout_s: 0 })).status).toBe(202)
  for (let i = 0; i < 40 && exits() === 0; i++) await Bun.sleep(25)
  expect(order).toEqual(['halt', 'members now=false'])
  expect(halted[0]!.code).toBe('E_CLUSTER_STOPPED')
  expect(halted[0]!.message).toContain('did not finish within the 0 s drain')
})
