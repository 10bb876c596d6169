/** JSON Schemas for constrained decoding tests: nested objects, arrays, enums, required and optional fields, anyOf,
 * $ref, tuples, patterns and numeric ranges. Every string, number and array is bounded, so a decode that follows only
 * the grammar — random tokens, or a random-weight model — ends within a few hundred tokens. */
export const SCHEMAS: Record<string, Record<string, unknown>> = {
  person: {
    type: 'object',
    properties: {
      name: { type: 'string', maxLength: 12 },
      age: { enum: [18, 30, 42, 65] },
      address: {
        type: 'object',
        properties: {
          city: { enum: ['Paris', 'Oslo', 'Lima'] },
          zip: { type: 'string', pattern: '^[0-9]{5}$' },
        },
        required: ['city', 'zip'],
        additionalProperties: false,
      },
      tags: { type: 'array', items: { enum: ['a', 'b', 'c'] }, maxItems: 3 },
    },
    required: ['name', 'age', 'address', 'tags'],
    additionalProperties: false,
  },
  order: {
    type: 'object',
    properties: {
      lines: {
        type: 'array',
        minItems: 1,
        maxItems: 3,
        items: {
          type: 'object',
          properties: {
            sku: { type: 'string', pattern: '^[A-Z]{3}-[0-9]{2}$' },
            qty: { enum: [1, 2, 3, 10] },
          },
          required: ['sku', 'qty'],
          additionalProperties: false,
        },
      },
      status: { type: 'string', enum: ['open', 'paid', 'shipped'] },
      express: { type: 'boolean' },
    },
    required: ['lines', 'status', 'express'],
    additionalProperties: false,
  },
  optional: {
    type: 'object',
    properties: {
      id: { type: 'integer', enum: [7, -7, 70] },
      note: { type: ['string', 'null'], maxLength: 6 },
      flag: { type: 'boolean' },
    },
    required: ['id'],
    additionalProperties: false,
  },
  choice: {
    type: 'object',
    properties: {
      value: { anyOf: [{ enum: [0, 1, 2] }, { type: 'string', maxLength: 4 }, { type: 'null' }] },
      kind: { const: 'choice' },
    },
    required: ['value', 'kind'],
    additionalProperties: false,
  },
  refs: {
    $defs: {
      point: {
        type: 'object',
        properties: { x: { enum: [-1, 0, 1] }, y: { type: 'boolean' } },
        required: ['x', 'y'],
        additionalProperties: false,
      },
    },
    type: 'object',
    properties: { from: { $ref: '#/$defs/point' }, to: { $ref: '#/$defs/point' } },
    required: ['from', 'to'],
    additionalProperties: false,
  },
  tuple: {
    type: 'array',
    prefixItems: [{ enum: ['x', 'y'] }, { enum: [1, 2, 3] }, { type: 'boolean' }],
    items: false,
    minItems: 3,
  },
  scalars: {
    type: 'object',
    properties: {
      n: { type: 'null' },
      t: { const: true },
      code: { type: 'string', pattern: '^[A-F0-9]{4}$' },
      short: { type: 'string', minLength: 1, maxLength: 3 },
    },
    required: ['n', 't', 'code', 'short'],
    additionalProperties: false,
  },
  words: {
    title: 'words',
    description: 'annotations only describe',
    type: 'object',
    properties: {
      words: {
        type: 'array',
        items: { type: 'string', pattern: '^[a-z]{1,5}$' },
        minItems: 2,
        maxItems: 4,
      },
      empty: { type: 'object', properties: {}, additionalProperties: false },
    },
    required: ['words', 'empty'],
    additionalProperties: false,
  },
}
