/** The SVG chart writer on its own: round y ticks from zero, escaped labels, unmeasured points left out of the line. */
import { expect, test } from 'bun:test'
import { renderLineChart, yTicks } from '../../src/bench/svg-chart.ts'
import { findAll, parseXml } from '../support/xml-check.ts'

test('y ticks start at zero and end at the first round value at or above the maximum', () => {
  expect(yTicks(123)).toEqual([0, 20, 40, 60, 80, 100, 120, 140])
  expect(yTicks(100)).toEqual([0, 20, 40, 60, 80, 100])
  expect(yTicks(0.37)).toEqual([0, 0.1, 0.2, 0.3, 0.4])
  expect(yTicks(7)).toEqual([0, 1, 2, 3, 4, 5, 6, 7])
  expect(yTicks(7.5)).toEqual([0, 2, 4, 6, 8])
  expect(yTicks(0)).toEqual([0, 1])
})

test('labels are escaped and points without a value are left out', () => {
  const svg = renderLineChart({
    title: 'a <b> & "c"',
    xLabel: 'Concurrency',
    xLog2: true,
    panels: [
      {
        title: 'p',
        yLabel: 'y',
        unit: 'ms',
        series: [
          {
            label: 'x<y & z',
            points: [
              { x: 1, y: 5 },
              { x: 2, y: null },
              { x: 4, y: 9 },
            ],
          },
        ],
      },
    ],
  })
  const root = parseXml(svg)
  expect(findAll(root, (e) => e.name === 'title')[0]!.text).toBe('a <b> & "c"')
  expect(findAll(root, (e) => e.attributes.class === 'series')[0]!.attributes['data-label']).toBe('x<y & z')
  expect(findAll(root, (e) => e.name === 'polyline')[0]!.attributes.points!.split(' ')).toHaveLength(2)
  expect(findAll(root, (e) => e.attributes.class === 'x-tick').map((e) => e.text)).toEqual(['1', '2', '4'])
})

test('the XML check rejects what is not well-formed', () => {
  expect(() => parseXml('<svg><g></svg>')).toThrow('closes <g>')
  expect(() => parseXml('<svg a="1" a="2"/>')).toThrow('twice')
  expect(() => parseXml('<svg>a & b</svg>')).toThrow('entity')
  expect(() => parseXml('<svg/><svg/>')).toThrow('second root')
})
