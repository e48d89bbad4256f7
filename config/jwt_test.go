package config

import (
	"fmt"
	"reflect"
	"testing"
)

// TestJWTOptionsMapEveryKey fills every field of the jwt section with a
// non-zero value and checks that the verifier's options carry each one, under
// the same field name, so a new key cannot be added to the file format and
// silently ignored.
func TestJWTOptionsMapEveryKey(t *testing.T) {
	var c Config
	fill(reflect.ValueOf(&c.JWT).Elem(), "jwt")
	if len(c.JWT.Providers) == 0 || c.JWT.Providers[0].ForwardToken == nil {
		t.Fatal("fill left the providers empty")
	}
	// space_delimited_claims is the authorization rules' setting, not the
	// verifier's: it must reach the rules instead.
	for i, p := range c.JWT.Providers {
		if got := c.Rules().SpaceDelimitedClaims[p.Name]; !reflect.DeepEqual(got, p.SpaceDelimitedClaims) {
			t.Fatalf("jwt.providers[%d].space_delimited_claims: the rules got %v, want %v", i, got, p.SpaceDelimitedClaims)
		}
	}
	if err := sameByName(reflect.ValueOf(c.JWT), reflect.ValueOf(c.JWT.Options()), "jwt"); err != nil {
		t.Fatal(err)
	}
}

// fill sets every settable field of v to a non-zero value derived from path.
func fill(v reflect.Value, path string) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			fill(v.Field(i), path+"."+v.Type().Field(i).Name)
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		fill(s.Index(0), path+"[0]")
		fill(s.Index(1), path+"[1]")
		v.Set(s)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(p.Elem(), path)
		v.Set(p)
	case reflect.String:
		v.SetString(path)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(len(path)))
	default:
		panic("fill: unhandled kind " + v.Kind().String() + " at " + path)
	}
}

// notVerifier are provider keys read by another part than the verifier;
// each has its own test that it arrives there.
var notVerifier = map[string]bool{"SpaceDelimitedClaims": true}

// sameByName reports the first field of src that dst lacks or holds with
// another value; fields only dst has (runtime dependencies) are ignored.
func sameByName(src, dst reflect.Value, path string) error {
	switch src.Kind() {
	case reflect.Struct:
		for i := range src.NumField() {
			name := src.Type().Field(i).Name
			if notVerifier[name] {
				continue
			}
			d := dst.FieldByName(name)
			if !d.IsValid() {
				return fmt.Errorf("%s.%s has no field of that name in %s", path, name, dst.Type())
			}
			if err := sameByName(src.Field(i), d, path+"."+name); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice:
		if src.Len() != dst.Len() {
			return fmt.Errorf("%s: %d elements mapped to %d", path, src.Len(), dst.Len())
		}
		for i := range src.Len() {
			if err := sameByName(src.Index(i), dst.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Pointer:
		if src.IsNil() != dst.IsNil() {
			return fmt.Errorf("%s: nil-ness not kept", path)
		}
		if src.IsNil() {
			return nil
		}
		return sameByName(src.Elem(), dst.Elem(), path)
	}
	if !src.Type().ConvertibleTo(dst.Type()) || src.Convert(dst.Type()).Interface() != dst.Interface() {
		return fmt.Errorf("%s: %v mapped to %v", path, src.Interface(), dst.Interface())
	}
	return nil
}
