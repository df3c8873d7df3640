import { useState } from 'react'
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query'
import { all, api, ApiError, type AdminAccount, type Role } from '../api'
import { dateTime } from '../format'
import { useSession } from '../session'
import { Dialog } from '../components/Dialog'
import { ErrorState, Skeleton } from '../components/States'

// Roles an owner can give here. Team admins need teams, which ccproxy does
// not have yet (the API refuses them).
const roles: Record<Exclude<Role, 'team_admin'>, string> = {
  owner: 'Owner — everything, including admins',
  admin: 'Admin — everything but admins',
  viewer: 'Viewer — read only',
}

/** The admin accounts, for owners: roles, disable/enable, new admins. */
export default function Admins() {
  const { billing_timezone: tz, username: me } = useSession()
  const qc = useQueryClient()
  const [creating, setCreating] = useState(false)
  const list = useQuery({ queryKey: ['admins'], queryFn: () => all<AdminAccount>('/admins') })
  const patch = useMutation({
    mutationFn: ({ id, body }: { id: string; body: { role?: Role; disabled?: boolean } }) => api<AdminAccount>('PATCH', '/admins/' + id, body),
    // The answer is the changed account: shown at once, then refetched.
    onSuccess: (a) => qc.setQueryData<AdminAccount[]>(['admins'], (list) => list?.map((x) => (x.id === a.id ? a : x))),
    onSettled: () => qc.invalidateQueries({ queryKey: ['admins'] }),
  })
  const err = patch.error instanceof ApiError ? patch.error.message : patch.error ? String(patch.error) : ''
  return (
    <section aria-labelledby="admins-h">
      <div className="page-head">
        <h1 id="admins-h">Admins</h1>
        <button type="button" onClick={() => setCreating(true)}>
          New admin
        </button>
      </div>
      <p className="form-error" role="alert">
        {err}
      </p>
      {list.isError ? (
        <ErrorState error={list.error} retry={() => list.refetch()} />
      ) : (
        <table className="data" aria-busy={list.isFetching}>
          <caption className="sr-only">Admin accounts</caption>
          <thead>
            <tr>
              <th scope="col">Username</th>
              <th scope="col">Role</th>
              <th scope="col">Sign-in</th>
              <th scope="col">Status</th>
              <th scope="col">Last login ({tz})</th>
              <th scope="col">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {list.data
              ? list.data.map((a) => {
                  const self = a.username === me
                  return (
                    <tr key={a.id}>
                      <td>{a.username}</td>
                      <td>
                        <select
                          aria-label={'Role of ' + a.username}
                          value={a.role}
                          disabled={self || patch.isPending || a.role === 'team_admin'}
                          title={self ? 'Another owner can change your role' : undefined}
                          onChange={(e) => patch.mutate({ id: a.id, body: { role: e.target.value as Role } })}
                        >
                          {Object.keys(roles).map((r) => (
                            <option key={r} value={r}>
                              {r}
                            </option>
                          ))}
                          {a.role === 'team_admin' && <option value="team_admin">team_admin</option>}
                        </select>
                      </td>
                      <td>{a.sso ? 'SSO' : 'Password'}</td>
                      <td>{a.disabled ? <span className="badge">Disabled</span> : 'Active'}</td>
                      <td>{a.last_login_at ? dateTime(a.last_login_at, tz) : <span className="muted">never</span>}</td>
                      <td className="r">
                        {!self && (
                          <button
                            type="button"
                            className={a.disabled ? 'secondary' : 'danger'}
                            disabled={patch.isPending}
                            onClick={() => patch.mutate({ id: a.id, body: { disabled: !a.disabled } })}
                          >
                            {a.disabled ? 'Enable' : 'Disable'}
                          </button>
                        )}
                      </td>
                    </tr>
                  )
                })
              : Array.from({ length: 3 }, (_, i) => (
                  <tr key={i}>
                    <td colSpan={6}>
                      <Skeleton />
                    </td>
                  </tr>
                ))}
          </tbody>
        </table>
      )}
      <p className="muted small">
        Admins who sign in with SSO are created at their first sign-in; their role follows their groups at the identity provider at every
        sign-in.
      </p>
      <CreateAdmin open={creating} onClose={() => setCreating(false)} />
    </section>
  )
}

function CreateAdmin({ open, onClose }: { open: boolean; onClose: () => void }) {
  const qc = useQueryClient()
  const [form, setForm] = useState({ username: '', password: '', role: 'admin' })
  const create = useMutation({
    mutationFn: () => api<AdminAccount>('POST', '/admins', form),
    onSuccess: () => {
      qc.invalidateQueries({ queryKey: ['admins'] })
      setForm({ username: '', password: '', role: 'admin' })
      onClose()
    },
  })
  const err = create.error instanceof ApiError ? create.error : null
  return (
    <Dialog open={open} title="New admin" onClose={onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault()
          create.mutate()
        }}
      >
        <label>
          Username <input required autoComplete="off" value={form.username} onChange={(e) => setForm({ ...form, username: e.target.value })} />
        </label>
        <label>
          Password (at least 12 characters)
          <input required type="password" autoComplete="new-password" minLength={12} value={form.password} onChange={(e) => setForm({ ...form, password: e.target.value })} />
        </label>
        <label>
          Role
          <select value={form.role} onChange={(e) => setForm({ ...form, role: e.target.value })}>
            {Object.entries(roles).map(([k, v]) => (
              <option key={k} value={k}>
                {v}
              </option>
            ))}
          </select>
        </label>
        <p className="form-error" role="alert">
          {err ? err.fields.map((f) => `${f.field}: ${f.message}`).join('; ') || err.message : create.error ? String(create.error) : ''}
        </p>
        <div className="actions">
          <button type="button" className="secondary" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" disabled={create.isPending}>
            Create
          </button>
        </div>
      </form>
    </Dialog>
  )
}
