/** GPT-OSS (OpenAI Harmony) calls: an assistant message on the commentary channel addressed to a function,
 * `<|channel|>commentary to=functions.f <|constrain|>json<|message|>{…}<|call|>` (the recipient may also sit before
 * the channel). `<|call|>` ends the turn (an EOS id, so it is not in the text). Other messages stay content as they are. */
import type { ChatTool } from '../../model/chat-template.ts'
import { callFromObject, openAiCallId, parseJson, type ParsedOutput, type ToolCallFormat } from './format.ts'

const START = '<|start|>'
const MESSAGE = '<|message|>'
const RECIPIENT = /\bto=functions\.([^\s<]+)/
const ENDS = ['<|end|>', '<|call|>', '<|return|>']

function parse(text: string, tools: readonly ChatTool[]): ParsedOutput {
  const calls = []
  let content = ''
  let pos = 0
  while (pos < text.length) {
    // one message: header up to <|message|>, body up to an end token, the next <|start|> or the end of the text
    const bodyAt = text.indexOf(MESSAGE, pos)
    if (bodyAt < 0) break
    let end = text.length
    let next = text.length
    for (const marker of [...ENDS, START]) {
      const at = text.indexOf(marker, bodyAt)
      if (at >= 0 && at < end) {
        end = at
        next = marker === START ? at : at + marker.length
      }
    }
    const header = text.slice(pos, bodyAt)
    const recipient = RECIPIENT.exec(header)
    const call = recipient
      ? callFromObject(
          { name: recipient[1], arguments: parseJson(text.slice(bodyAt + MESSAGE.length, end).trim()) },
          tools,
          ['arguments'],
        )
      : null
    if (call) calls.push(call)
    else content += text.slice(pos, next)
    pos = next
  }
  content += text.slice(pos)
  return { content, calls }
}

export const harmony: ToolCallFormat = {
  name: 'harmony',
  detect: (template) => template.includes('<|channel|>') && template.includes('<|call|>'),
  parse,
  // a header names its recipient only as it ends, so a stream holds the whole answer back
  callStart: () => 0,
  closedCalls: false,
  callBegin: null,
  callEnd: null,
  forced: (name) => ({
    begin: `<|channel|>commentary to=functions.${name} <|constrain|>json${MESSAGE}`,
    end: '',
    arguments: 'json',
    separator: null,
  }),
  callId: openAiCallId,
}
