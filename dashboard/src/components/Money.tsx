import { money, moneyExact, tokens, integer } from '../format'

/** Money with the exact value on hover. */
export function Money({ value }: { value: string | null | undefined }) {
  return (
    <span className="num" title={moneyExact(value)}>
      {money(value)}
    </span>
  )
}

/** A compact token count with the exact count on hover. */
export function Tokens({ value }: { value: number }) {
  return (
    <span className="num" title={integer(value) + ' tokens'}>
      {tokens(value)}
    </span>
  )
}
