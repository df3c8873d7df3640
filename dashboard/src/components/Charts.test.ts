import { describe, expect, it } from 'vitest'
import { createElement } from 'react'
import { renderToString } from 'react-dom/server'
import { BarsChart, TimeChart, type Series } from './Charts'

const two: Series[] = [
  { key: 'a', label: 'Bedrock spend', color: 'red', format: String },
  { key: 'b', label: 'Plan', color: 'blue', format: String },
]
const data = [{ day: 'Oct 1', a: 1, b: 2 }]

// The legend is HTML beside the chart: recharts' own legend measures itself
// once the chart is drawn and has the chart drawn again.
describe('chart legends', () => {
  it.each([
    ['an area chart', createElement(TimeChart, { title: 't', data, x: 'day', series: two }), ['Bedrock spend', 'Plan']],
    ['an area chart of one series', createElement(TimeChart, { title: 't', data, x: 'day', series: two.slice(0, 1) }), ['Bedrock spend']],
    ['a bar chart', createElement(BarsChart, { title: 't', data, x: 'day', series: two }), ['Bedrock spend', 'Plan']],
    ['a bar chart of one series', createElement(BarsChart, { title: 't', data, x: 'day', series: two.slice(0, 1) }), []],
  ])('%s', (_, el, want) => {
    const html = renderToString(el)
    expect(html).not.toContain('recharts-legend')
    const items = [...html.matchAll(/<li><span class="swatch"[^>]*><\/span>([^<]*)<\/li>/g)].map((m) => m[1])
    expect(items).toEqual(want)
  })

  it('keeps the figure the same height with and without a legend', () => {
    for (const series of [two, two.slice(0, 1)]) {
      const html = renderToString(createElement(BarsChart, { title: 't', data, x: 'day', series, height: 200 }))
      const heights = [...html.matchAll(/height:(\d+)px/g)].map((m) => Number(m[1]))
      // The figure, then the chart's own box, then the legend if any.
      expect(heights[0]).toBe(248)
      expect(heights.slice(1).reduce((a, b) => a + b, 0)).toBe(200)
    }
  })
})
